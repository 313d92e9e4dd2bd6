"""A callbot node for the cluster tests: the real `callbot serve` code path (flags, cluster,
workers' private port, signals) with scripted engines, since the models are not what those
tests check (tests/test_remote_engines.py runs the real ones behind `callbot engines serve`).

    python -m tests.cluster_node --port P --cluster redis://... --advertise-url http://...
"""

from __future__ import annotations

import asyncio
import sys

from callbot.pipeline.engines import Engines
from callbot.pipeline.fakes import ScriptedASR, ScriptedLLM, ScriptedTTS
from callbot.signalling.cli import _logging, build_config, build_parser, serve


def main() -> None:
    args = build_parser().parse_args(["serve", *sys.argv[1:]])
    _logging(args.log_level)
    engines = Engines(asr=ScriptedASR(["How many legs does a spider have?"]),
                      llm=ScriptedLLM("A spider has eight legs."), tts=ScriptedTTS())
    asyncio.run(serve(build_config(args), engines=engines, worker_index=args.worker_index))


if __name__ == "__main__":
    main()
