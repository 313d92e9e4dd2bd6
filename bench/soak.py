"""Open and close calls for a bounded time; the server's RSS, threads, fds and asyncio tasks
before and after. The server runs in this process (so its asyncio tasks can be counted);
callers run in the same loop, so RSS includes them.

    python3 -m bench.soak [--seconds 60] [--concurrent 2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from typing import Any

from aiohttp import web

from callbot import loadtest
from callbot.pipeline.settings import EngineSettings
from callbot.signalling.app import create_app, shared_engines
from callbot.signalling.config import CallbotConfig

from .common import LOOPBACK, proc_stats, save, table


async def snapshot(registry_len: Any) -> dict[str, Any]:
    gc.collect()
    await asyncio.sleep(0.5)
    stats = proc_stats(os.getpid())
    stats["asyncio_tasks"] = len(asyncio.all_tasks())
    stats["calls"] = registry_len()
    return stats


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    engines = await asyncio.to_thread(shared_engines, EngineSettings())
    app = create_app(CallbotConfig(ice_hosts=(LOOPBACK,)), engines=engines)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://{LOOPBACK}:{port}"
    from callbot.signalling.server.state import STATE

    def registry_len() -> int:
        return len(app[STATE].registry)

    steps = loadtest.default_scenario()[:1]
    plan = loadtest.plan_steps(steps, 1)
    options = loadtest.LoadOptions(url=url, scenario=steps, ice_hosts=(LOOPBACK,),
                                   hangup_delay_s=0.1)
    counter = 0
    results: list[dict[str, Any]] = []

    async def one() -> None:
        nonlocal counter
        counter += 1
        results.append(await loadtest.run_call(counter, options, plan))

    await one()  # warm-up: lazy imports, first-call allocations
    await asyncio.sleep(1)
    before = await snapshot(registry_len)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        await asyncio.gather(*(one() for _ in range(args.concurrent)))
    await asyncio.sleep(2)
    after = await snapshot(registry_len)
    await runner.cleanup()
    ok = sum(1 for r in results[1:] if r["ok"])
    return {"seconds": args.seconds, "concurrent": args.concurrent, "calls": len(results) - 1,
            "calls_ok": ok, "before": before, "after": after,
            "failures": [r["reason"] for r in results if not r["ok"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrent", type=int, default=2)
    args = parser.parse_args()
    result = asyncio.run(soak(args))
    b, a = result["before"], result["after"]
    keys = ["rss_mb", "threads", "fds", "asyncio_tasks", "calls"]
    print(f"{result['calls']} calls ({result['calls_ok']} ok) in {args.seconds:.0f} s, "
          f"{args.concurrent} at a time")
    print(table(["figure", "before", "after", "delta"],
                [[k, b[k], a[k], a[k] - b[k]] for k in keys]))
    if result["failures"]:
        print("failures:", result["failures"][:5])
    save("soak", result)


if __name__ == "__main__":
    main()
