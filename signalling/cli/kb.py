"""`callbot kb add|list|remove|search`: build and inspect the knowledge base.

The index file comes from `--db`, else `CALLBOT_KB_DB`, else `knowledge.db` of `--config`,
else the default `$CALLBOT_HOME/knowledge.db` (env CALLBOT_KB overrides it; CALLBOT_HOME
defaults to ~/.callbot), which `callbot serve` answers from with no flag.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("kb", help="the knowledge base the bot answers from")
    p.add_argument("--db", help="index file (default: env CALLBOT_KB_DB, [knowledge] db of "
                                "--config, or $CALLBOT_HOME/knowledge.db, the index "
                                "`callbot serve` uses by default)")
    p.add_argument("--config", help="TOML or YAML settings file (for [knowledge] db)")
    kb = p.add_subparsers(dest="kb_command", required=True)
    add = kb.add_parser("add", help="index files and folders (recursively); Markdown, text, "
                                    "HTML, PDF")
    add.add_argument("paths", nargs="+", metavar="PATH")
    add.add_argument("--max-file-mb", type=float, default=20.0,
                     help="skip files larger than this (default 20)")
    add.add_argument("--max-files", type=int, default=10_000,
                     help="at most this many documents per folder (default 10000)")
    add.add_argument("--quiet", action="store_true", help="only problems and the summary")
    kb.add_parser("list", help="the indexed documents")
    rm = kb.add_parser("remove", help="forget a document, or every document under a folder")
    rm.add_argument("paths", nargs="+", metavar="PATH")
    search = kb.add_parser("search", help="the best passages for a question")
    search.add_argument("query")
    search.add_argument("-n", "--limit", type=int, default=3)
    search.add_argument("--mode", choices=["hybrid", "keyword", "vector"], default="hybrid")


def db_path(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    if os.environ.get("CALLBOT_KB_DB"):
        return os.environ["CALLBOT_KB_DB"]
    from callbot.signalling.config import CallbotConfig, default_kb_path

    if args.config:
        configured = CallbotConfig.load(args.config).knowledge.db
        if configured:
            return configured
    return default_kb_path()


def main(args: argparse.Namespace) -> int:
    from callbot.pipeline.knowledge import FileResult, KnowledgeBase, KnowledgeError
    from callbot.signalling.config import ConfigError

    try:
        path = db_path(args)
    except ConfigError as exc:
        print(f"callbot kb: bad configuration: {exc}", file=sys.stderr)
        return 2
    if args.kb_command != "add" and not os.path.exists(path):
        print(f"callbot kb: no index at {path}: create it with `callbot kb add PATH...`",
              file=sys.stderr)
        return 1
    try:
        if args.kb_command == "add":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            if args.max_file_mb <= 0 or args.max_files < 1:
                print("callbot kb: --max-file-mb and --max-files must be positive",
                      file=sys.stderr)
                return 2
            kb = KnowledgeBase(path, max_file_bytes=int(args.max_file_mb * 1024 * 1024),
                               max_files=args.max_files)
        else:
            kb = KnowledgeBase(path)
    except KnowledgeError as exc:
        print(f"callbot kb: {exc}", file=sys.stderr)
        return 1
    if args.kb_command == "add":
        def show(result: FileResult) -> None:
            if result.status == "skipped":
                print(f"skipped    {result.path}: {result.message}", file=sys.stderr,
                      flush=True)
            elif not args.quiet or result.message:
                extra = f" ({result.passages} passages)" if result.passages else ""
                note = f" — {result.message}" if result.message else ""
                print(f"{result.status:<10} {result.path}{extra}{note}", flush=True)

        report = kb.add(args.paths, progress=show)
        print(f"{path}: {report.count('added')} added, {report.count('updated')} updated, "
              f"{report.count('unchanged')} unchanged, {report.count('removed')} removed, "
              f"{report.count('skipped')} skipped; {report.passages} passages in "
              f"{report.seconds:.1f} s; {kb.passage_count()} passages in the index")
        if report.interrupted:
            print("callbot kb: interrupted; what was indexed so far is kept, run it again to "
                  "finish", file=sys.stderr)
            return 130
        return 1 if report.count("skipped") and not (
            report.count("added") or report.count("updated") or report.count("unchanged")
        ) else 0
    if args.kb_command == "list":
        docs = kb.documents()
        for doc in docs:
            print(f"{doc.passages:>5} passages  {doc.kind:<8} {doc.path}  \"{doc.title}\"")
        print(f"{len(docs)} documents, {kb.passage_count()} passages in {path}")
        return 0
    if args.kb_command == "remove":
        status = 0
        for target in args.paths:
            removed = kb.remove(target)
            if not removed:
                print(f"callbot kb: {target} is not in the index", file=sys.stderr)
                status = 1
            for gone in removed:
                print(f"removed    {gone}")
        return status
    if args.limit < 1:
        print("callbot kb: --limit must be at least 1", file=sys.stderr)
        return 2
    hits = kb.search(args.query, limit=args.limit, mode=args.mode)
    if not hits:
        print("no passages found")
        return 0
    for n, hit in enumerate(hits, start=1):
        where = f"{hit.title} — {hit.heading}" if hit.heading else hit.title
        print(f"{n}. [{where}] {hit.source}  score {hit.score:.4f}  "
              f"similarity {hit.similarity:.3f}")
        print(f"   {hit.text}")
    return 0
