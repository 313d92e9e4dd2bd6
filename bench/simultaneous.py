"""Callers who finish their questions at the same moment: how much later are they answered?

For each variant (a server configuration), in the same run on the same machine: one call
alone asks `--turns` questions, then `--together` calls start at once (their clips are the
same length, so every question ends at the same moment, the worst case for shared models)
and ask the same. Voice-to-voice (caller's end of speech -> first loud bot audio) median and
p95 of each, and the ratio together/alone of the medians. Variants are run in turn, the
whole sequence `--rounds` times, so a machine that is busier in one minute than the next
does not favour one variant.

    python3 -m bench.simultaneous --together 3 --turns 3 --rounds 1
    python3 -m bench.simultaneous --variants default,one_thread_each
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from typing import Any

from callbot import loadtest

from .common import LOOPBACK, ServerProcess, save, table

VARIANTS = {
    # the defaults (the embedded LLM serves whole replies, first come first served)
    "default": "",
    # the LLM in the server's process (GIL shared with the media), for comparison
    "llm_thread": "[engines]\nllm_isolation = \"thread\"\n",
    # one compute thread each for ASR and LLM: no oversubscription of 2 cores
    "one_thread_each": "[engines]\nasr_threads = 1\nllm_threads = 1\n",
}


def v2v(report: dict[str, Any]) -> list[float]:
    return [t["v2v_ms"] for r in report["results"] for t in r.get("turns", [])
            if t.get("v2v_ms") is not None]


def run_calls(url: str, n: int, turns: int) -> dict[str, Any]:
    options = loadtest.LoadOptions(url=url, calls=n, procs=min(n, 3), ramp_s=0.0, turns=turns,
                                   ice_hosts=(LOOPBACK,))
    return asyncio.run(loadtest.run_loadtest(options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default",
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--together", type=int, default=3)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    names = args.variants.split(",")
    values: dict[str, dict[str, list[float]]] = {n: {"alone": [], "together": []} for n in names}
    failed: dict[str, int] = {n: 0 for n in names}
    for _ in range(args.rounds):
        for name in names:
            with ServerProcess(toml=VARIANTS[name]) as server:
                run_calls(server.url, 1, 1)  # warm-up: first turn's caches, not measured
                for key, n in (("alone", 1), ("together", args.together)):
                    report = run_calls(server.url, n, args.turns)
                    values[name][key] += v2v(report)
                    failed[name] += report["summary"]["calls_failed"]
                    print(f"{name} {key}: {sorted(round(v) for v in v2v(report))}", flush=True)
    rows = []
    for name in names:
        alone, together = values[name]["alone"], values[name]["together"]
        if not alone or not together:
            rows.append([name, len(alone), None, None, len(together), None, None, None,
                         failed[name]])
            continue
        a50, t50 = statistics.median(alone), statistics.median(together)
        t95 = sorted(together)[max(0, int(0.95 * len(together) + 0.5) - 1)]
        rows.append([name, len(alone), round(a50), round(max(alone)), len(together), round(t50),
                     round(t95), round(t50 / a50, 2), failed[name]])
    keys = ["variant", "n alone", "alone p50", "alone max", f"n {args.together} at once",
            "together p50", "together p95", "ratio p50", "failed calls"]
    print(f"\nv2v ms; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print(table(keys, rows))
    save("simultaneous", {"args": vars(args), "values": values, "rows": rows,
                          "load_avg": os.getloadavg()})


if __name__ == "__main__":
    main()
