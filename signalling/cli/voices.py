"""`callbot voices add|list`: the Kokoro-82M natural voices (zh, es, fr, it, pt, hi, en).

The voices ship in the npm tarball `kokoro-js@1.2.1` (`npm pack kokoro-js@1.2.1`, no
`npm install`); `callbot voices add kokoro-js-1.2.1.tgz` copies its `package/voices/*.bin` into
`$CALLBOT_CACHE_DIR/kokoro-voices` (default ~/.cache/callbot), where `callbot serve` finds them.
The model itself comes from the Python extra: `pip install 'callbot[voices]'`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("voices", help="install and list the Kokoro natural voices")
    p.add_argument("--dir", help="voices folder (default: $CALLBOT_CACHE_DIR/kokoro-voices; "
                                 "[tts] kokoro_voices_dir must then name it too)")
    voices = p.add_subparsers(dest="voices_command", required=True)
    add = voices.add_parser("add", help="copy the voices out of the kokoro-js npm tarball "
                                        "(or a folder of *.bin voices)")
    add.add_argument("source", metavar="TARBALL_OR_FOLDER")
    voices.add_parser("list", help="the installed voices, by language, and what is missing")


def main(args: argparse.Namespace) -> int:
    from callbot.pipeline.tts import kokoro

    folder = Path(args.dir).expanduser() if args.dir else None
    if args.voices_command == "add":
        try:
            names = kokoro.install_voices(Path(args.source).expanduser(), folder)
        except (kokoro.KokoroMissing, OSError, ValueError) as exc:
            print(f"callbot voices: {exc}", file=sys.stderr)
            return 1
        print(f"{len(names)} Kokoro voices in {kokoro.voices_dir(folder)}")
    installed = kokoro.installed_voices(folder)
    by_language: dict[str, list[str]] = {}
    for name in installed:
        by_language.setdefault(kokoro.voice_language(name) or "?", []).append(name)
    for language, names in sorted(by_language.items()):
        print(f"{language}: {', '.join(names)}")
    missing = kokoro.kokoro_available(folder)
    if missing is not None:
        print(f"Kokoro is not usable yet: {missing}", file=sys.stderr)
        return 1 if args.voices_command == "list" else 0
    return 0
