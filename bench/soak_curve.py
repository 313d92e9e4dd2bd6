"""Memory over many calls: RSS sampled after every call, to tell a leak from allocator growth.

Each call speaks one question and hears the full spoken reply (the load-test scenario's first
step). The server runs in this process (callers too, so RSS includes them).

    python3 -m bench.soak_curve --calls 200 [--concurrent 2] [--trim] [--tag NAME]
    MALLOC_ARENA_MAX=2 python3 -m bench.soak_curve --calls 200 --tag arena2

`--trim` calls glibc `malloc_trim(0)` after every call (what `limits.malloc_trim` does in the
server). A leak keeps growing whatever the allocator settings; allocator growth (glibc arenas
holding freed memory, one per thread that ever allocated) flattens with MALLOC_ARENA_MAX or trim.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import time
from typing import Any

from aiohttp import web

from callbot import loadtest
from callbot.pipeline.settings import EngineSettings
from callbot.signalling.app import create_app, shared_engines
from callbot.signalling.config import CallbotConfig

from .common import LOOPBACK, ServerProcess, proc_stats, save


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    if args.subprocess:
        return await soak_server_process(args)
    engines = await asyncio.to_thread(shared_engines, EngineSettings())
    app = create_app(CallbotConfig(ice_hosts=(LOOPBACK,)), engines=engines)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://{LOOPBACK}:{port}"
    steps = loadtest.default_scenario()[:1]
    plan = loadtest.plan_steps(steps, 1)
    options = loadtest.LoadOptions(url=url, scenario=steps, ice_hosts=(LOOPBACK,),
                                   hangup_delay_s=0.1)
    samples: list[dict[str, Any]] = []
    ok = 0
    done = 0
    started = time.monotonic()

    async def one(n: int) -> None:
        nonlocal ok, done
        result = await loadtest.run_call(n, options, plan)
        ok += bool(result["ok"])
        done += 1
        if args.trim:
            _trim()
        stats = proc_stats(os.getpid())
        samples.append({"call": done, "t_s": round(time.monotonic() - started, 1),
                        "rss_mb": stats["rss_mb"], "threads": stats["threads"],
                        "fds": stats["fds"], "tasks": len(asyncio.all_tasks())})
        if done % 10 == 0:
            print(f"{done} calls, rss {stats['rss_mb']} MB", flush=True)

    n = 0
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start(12)
    first_snapshot: Any = None
    while n < args.calls:
        if args.tracemalloc and n == args.calls // 3:
            gc.collect()
            first_snapshot = tracemalloc.take_snapshot()
        batch = min(args.concurrent, args.calls - n)
        await asyncio.gather(*(one(n + i + 1) for i in range(batch)))
        n += batch
    gc.collect()
    await asyncio.sleep(2)
    final = proc_stats(os.getpid())
    growth: list[str] = []
    if args.tracemalloc and first_snapshot is not None:
        diff = tracemalloc.take_snapshot().compare_to(first_snapshot, "traceback")
        for stat in diff[:8]:
            growth.append(f"{stat.size_diff / 1e6:+.2f} MB in {stat.count_diff:+d} blocks: "
                          + " <- ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}"
                                        for f in list(stat.traceback)[-4:]))
        print("python heap growth between 1/3 and the end:", *growth, sep="\n  ")
        counts: dict[str, int] = {}
        for obj in gc.get_objects():
            counts[type(obj).__name__] = counts.get(type(obj).__name__, 0) + 1
        print("most common objects:", sorted(counts.items(), key=lambda kv: -kv[1])[:12])
    await runner.cleanup()
    return {"calls": args.calls, "calls_ok": ok, "concurrent": args.concurrent,
            "trim": args.trim, "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
            "samples": samples, "final": final, "python_heap_growth": growth}


async def soak_server_process(args: argparse.Namespace) -> dict[str, Any]:
    """The server alone in its own process (`callbot serve`): its RSS without the callers'."""
    from callbot.rtc.ice import restrict_host_addresses

    restrict_host_addresses((LOOPBACK,))  # the callers' host candidates (aioice skips loopback)
    server = ServerProcess()
    await asyncio.to_thread(server.wait_healthy)
    steps = loadtest.default_scenario()[:1]
    plan = loadtest.plan_steps(steps, 1)
    options = loadtest.LoadOptions(url=server.url, scenario=steps, ice_hosts=(LOOPBACK,),
                                   hangup_delay_s=0.1)
    samples: list[dict[str, Any]] = []
    ok = done = 0
    started = time.monotonic()
    try:
        while done < args.calls:
            batch = min(args.concurrent, args.calls - done)
            results = await asyncio.gather(*(loadtest.run_call(done + i + 1, options, plan)
                                             for i in range(batch)))
            ok += sum(bool(r["ok"]) for r in results)
            done += batch
            await asyncio.sleep(0.5)  # the calls' tear-down on the server
            stats = proc_stats(server.pid, with_children=True)
            samples.append({"call": done, "t_s": round(time.monotonic() - started, 1),
                            "rss_mb": stats["rss_mb"], "threads": stats["threads"],
                            "fds": stats["fds"]})
            if done % 10 == 0:
                print(f"{done} calls, server rss {stats['rss_mb']} MB", flush=True)
        final = proc_stats(server.pid, with_children=True)
    finally:
        server.stop()
    return {"calls": args.calls, "calls_ok": ok, "concurrent": args.concurrent,
            "trim": False, "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"),
            "server_process": True, "samples": samples, "final": final}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--trim", action="store_true")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--subprocess", action="store_true",
                        help="run `callbot serve` in its own process and sample only its RSS")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="report Python heap growth between 1/3 of the calls and the end")
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    samples = result["samples"]
    print(f"{result['calls']} calls ({result['calls_ok']} ok), tag {args.tag}")
    step = max(1, len(samples) // 10)
    for sample in samples[::step] + samples[-1:]:
        print(f"  after call {sample['call']}: {sample['rss_mb']:.1f} MB")
    save(f"soak_curve_{args.tag}", result)


if __name__ == "__main__":
    main()
