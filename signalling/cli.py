"""`callbot` command line: `callbot serve`, `callbot loadtest`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from aiohttp import web

from callbot import loadtest
from callbot.pipeline.calllog import LOG_FORMAT, CallIdFilter

from .app import create_app
from .config import CallbotConfig, ConfigError, with_overrides
from .slowclients import GuardedTCPSite


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the call server and the browser demo")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument("--config", help="TOML or YAML settings file")
    p.add_argument("--ice-host", action="append", dest="ice_hosts", metavar="ADDRESS",
                   help="local address offered as ICE host candidate (repeatable; "
                        "env CALLBOT_ICE_HOSTS, comma-separated)")
    p.add_argument("--ice-public-ip", metavar="ADDRESS",
                   help="public address announced for host candidates (NAT 1:1)")
    p.add_argument("--max-calls", type=int, help="concurrent call limit")
    p.add_argument("--auth-token", action="append", dest="auth_tokens", metavar="TOKEN",
                   help="static bearer token that may start calls (repeatable; "
                        "env CALLBOT_AUTH_TOKENS)")
    p.add_argument("--auth-mode", choices=["auto", "none", "token"],
                   help="auto (default): open only to requests from this machine while no "
                        "token is configured; none: open on purpose; token: always a token")
    p.add_argument("--admin-token", action="append", dest="admin_tokens", metavar="TOKEN",
                   help="token that may list and end every call (repeatable)")
    p.add_argument("--client-system-prompt", choices=["auto", "allow", "deny"],
                   help="may clients set options.system_prompt (auto: only with a token)")
    p.add_argument("--allowed-origin", action="append", dest="allowed_origins",
                   metavar="ORIGIN", help="browser Origin allowed to start calls (repeatable; "
                                          "env CALLBOT_ALLOWED_ORIGINS)")
    p.add_argument("--asr-model", choices=["tiny.en", "base"])
    p.add_argument("--llm-base-url", help="OpenAI-compatible server, e.g. http://host:8000/v1 "
                                          "(default: the embedded model)")
    p.add_argument("--llm-model", help="model name sent to that server")
    p.add_argument("--log-level", default="INFO")


def build_config(args: argparse.Namespace) -> CallbotConfig:
    config = CallbotConfig.load(args.config)
    flags = {
        "host": args.host,
        "port": args.port,
        "ice_hosts": args.ice_hosts,
        "ice_public_ip": args.ice_public_ip,
        "limits.max_calls": args.max_calls,
        "auth.bearer_tokens": args.auth_tokens,
        "auth.allowed_origins": args.allowed_origins,
        "auth.mode": args.auth_mode,
        "auth.admin_tokens": args.admin_tokens,
        "auth.client_system_prompt": args.client_system_prompt,
        "engines.asr_model": args.asr_model,
        "engines.openai_base_url": args.llm_base_url,
        "engines.openai_model": args.llm_model,
    }
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.llm_base_url:
        overrides["engines.llm_backend"] = "openai"
    return with_overrides(config, overrides)


async def serve(config: CallbotConfig) -> None:
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False)
    print("callbot: loading models...", flush=True)
    await runner.setup()
    site = GuardedTCPSite(runner, config.host, config.port, limits=config.limits)
    await site.start()
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"callbot: ready, open http://{host}:{config.port}/ in a browser", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("callbot: shutting down", flush=True)
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    loadtest.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "loadtest":
        return loadtest.main(args)
    if args.command == "serve":
        logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
        for handler in logging.getLogger().handlers:
            handler.addFilter(CallIdFilter())
        try:
            config = build_config(args)
        except ConfigError as exc:
            print(f"callbot: bad configuration: {exc}", file=sys.stderr)
            return 2
        asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
