"""`callbot` command line: `callbot serve`, `callbot engines serve`, `callbot loadtest`,
`callbot capacity`, `callbot kb`, `callbot doctor`, `callbot config`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from typing import Any

from aiohttp import web

from callbot import loadtest
from callbot.pipeline.calllog import LOG_FORMAT, CallIdFilter
from callbot.pipeline.engines import Engines
from callbot.pipeline.safety.pii import PiiRedactingFilter
from callbot.pipeline.settings import LOCAL_LLM_MODELS, EngineSettings
from callbot.signalling.app import create_app
from callbot.signalling.cli import capacity as capacity_cli
from callbot.signalling.cli import configfile
from callbot.signalling.cli import doctor as doctor_cli
from callbot.signalling.cli import kb as kb_cli
from callbot.signalling.cli import voices as voices_cli
from callbot.signalling.cluster.workers import private_advertise, supervise, worker_count
from callbot.signalling.config import CallbotConfig, ConfigError, with_overrides
from callbot.signalling.server.engine_server import serve_engines
from callbot.signalling.server.slowclients import GuardedTCPSite


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the call server and the browser demo")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument("--config", help="TOML or YAML settings file")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate "
                   "(chain); needs --tls-key (env CALLBOT_TLS_CERT)")
    p.add_argument("--tls-key", metavar="PEM", help="the certificate's private key "
                   "(env CALLBOT_TLS_KEY)")
    p.add_argument("--ice-host", action="append", dest="ice_hosts", metavar="ADDRESS",
                   help="local address offered as ICE host candidate (repeatable; "
                        "env CALLBOT_ICE_HOSTS, comma-separated)")
    p.add_argument("--ice-public-ip", metavar="ADDRESS",
                   help="public address announced for host candidates (NAT 1:1)")
    p.add_argument("--max-calls", type=int, help="concurrent call limit")
    p.add_argument("--capacity", type=int, metavar="N",
                   help="talking calls this node answers within the latency budget, as "
                        "measured by `callbot capacity`; more get 503 (env CALLBOT_CAPACITY)")
    p.add_argument("--sip", metavar="HOST:PORT",
                   help="answer phone calls: a SIP line on this UDP address (config [sip])")
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
    p.add_argument("--asr-model", choices=["tiny.en", "base", "auto"],
                   help="auto (default): tiny.en for English calls, multilingual base for "
                        "the others and for detection; tiny.en: English only")
    p.add_argument("--language", action="append", dest="languages", metavar="CODE",
                   help="a language calls may use or be detected in: en, zh, de, fr, es "
                        "(repeatable; env CALLBOT_LANGUAGES, comma-separated)")
    p.add_argument("--llm-base-url", help="OpenAI-compatible server, e.g. http://host:8000/v1 "
                                          "(default: the embedded model)")
    p.add_argument("--llm-model", help="embedded model: qwen2.5-1.5b (default) or "
                                       "smollm2-135m (faster, often wrong); with --llm-base-url, "
                                       "the model name sent to that server")
    p.add_argument("--kb", dest="kb_db", metavar="FILE",
                   help="knowledge base to answer from (built by `callbot kb add`; "
                        "env CALLBOT_KB_DB; default: $CALLBOT_HOME/knowledge.db if it exists)")
    p.add_argument("--no-kb", dest="kb_enabled", action="store_false", default=None,
                   help="answer without any knowledge base, even the default one")
    p.add_argument("--memory", action="store_true", default=None,
                   help="remember known callers between calls (env CALLBOT_MEMORY)")
    p.add_argument("--asr-url", help="ASR on an inference server (OpenAI-compatible "
                                     "/audio/transcriptions), e.g. http://models:9000/v1")
    p.add_argument("--tts-url", help="TTS on an inference server (OpenAI-compatible "
                                     "/audio/speech, streamed PCM), e.g. http://models:9000/v1")
    p.add_argument("--workers", default="1", metavar="N|auto",
                   help="processes behind the one port (SO_REUSEPORT); auto: one per core")
    p.add_argument("--cluster", metavar="REDIS_URL",
                   help="join a cluster whose shared state is in Redis, e.g. "
                        "redis://10.0.0.5:6379/0 (env CALLBOT_CLUSTER)")
    p.add_argument("--advertise-url", metavar="URL",
                   help="how the other nodes reach this one, e.g. http://10.0.0.7:8080 "
                        "(env CALLBOT_ADVERTISE_URL)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective configuration (secrets masked) and exit")


def _engines_parser(sub: Any) -> None:
    p = sub.add_parser("engines", help="serve this machine's ASR/TTS models over HTTP")
    esub = p.add_subparsers(dest="engines_command", required=True)
    s = esub.add_parser("serve", help="OpenAI-compatible /v1/audio/transcriptions and "
                                      "/v1/audio/speech for call nodes (--asr-url/--tts-url)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=9000)
    s.add_argument("--asr-model", choices=["tiny.en", "base"], default="tiny.en")
    s.add_argument("--asr-threads", type=int, default=2)
    s.add_argument("--tts-voice", help="default Piper voice (default: the first installed)")
    s.add_argument("--log-level", default="INFO")


def build_config(args: argparse.Namespace) -> CallbotConfig:
    config = CallbotConfig.load(args.config)
    flags = {
        "host": args.host,
        "port": args.port,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "ice_hosts": args.ice_hosts,
        "ice_public_ip": args.ice_public_ip,
        "limits.max_calls": args.max_calls,
        "capacity.calls": args.capacity,
        "auth.bearer_tokens": args.auth_tokens,
        "auth.allowed_origins": args.allowed_origins,
        "auth.mode": args.auth_mode,
        "auth.admin_tokens": args.admin_tokens,
        "auth.client_system_prompt": args.client_system_prompt,
        "engines.asr_model": args.asr_model,
        "languages": args.languages,
        "engines.openai_base_url": args.llm_base_url,
        "engines.asr_url": args.asr_url,
        "engines.tts_url": args.tts_url,
        "cluster.redis_url": args.cluster,
        "cluster.advertise_url": args.advertise_url,
        "knowledge.db": args.kb_db,
        "knowledge.enabled": args.kb_enabled,
        "memory.enabled": args.memory,
    }
    if args.sip:
        host, _, port = args.sip.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--sip: expected HOST:PORT, got {args.sip!r}")
        flags.update({"sip.enabled": True, "sip.host": host.strip("[]"), "sip.port": int(port)})
    if args.llm_model in LOCAL_LLM_MODELS and not args.llm_base_url:
        flags["engines.llm_model"] = args.llm_model
    else:
        flags["engines.openai_model"] = args.llm_model
    overrides = {k: v for k, v in flags.items() if v is not None}
    if args.llm_base_url:
        overrides["engines.llm_backend"] = "openai"
    return with_overrides(config, overrides)


def tls_context(config: CallbotConfig) -> ssl.SSLContext | None:
    """The server's TLS context (None: plain HTTP); ConfigError if the files do not load."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"tls_cert/tls_key: cannot load {config.tls_cert} with "
                          f"{config.tls_key}: {exc}") from exc
    return context


async def serve(config: CallbotConfig, *, engines: Engines | None = None,
                worker_index: int | None = None) -> None:
    """Run one server process (a worker of `--workers N` when `worker_index` is set)."""
    private: socket.socket | None = None
    if worker_index is not None:  # a private port of its own, advertised to its siblings
        host = private_advertise(config.cluster.advertise_url)
        private = socket.create_server((host, 0))
        url_host = f"[{host}]" if ":" in host else host
        config = with_overrides(config, {
            "cluster.advertise_url": f"http://{url_host}:{private.getsockname()[1]}"})
    app = create_app(config, engines=engines)
    runner = web.AppRunner(app, handle_signals=False)
    print("callbot: loading models...", flush=True)
    await runner.setup()
    tls = tls_context(config)
    site = GuardedTCPSite(runner, config.host, config.port, limits=config.limits,
                          reuse_port=True if worker_index is not None else None,
                          ssl_context=tls)
    await site.start()
    if private is not None:
        await web.SockSite(runner, private).start()
    host = f"[{config.host}]" if ":" in config.host else config.host
    scheme = "https" if tls is not None else "http"
    who = f" (worker {worker_index}, pid {os.getpid()})" if worker_index is not None else ""
    print(f"callbot: ready{who}, open {scheme}://{host}:{config.port}/ in a browser", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("callbot: shutting down", flush=True)
    await runner.cleanup()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _engines_parser(sub)
    loadtest.add_parser(sub)
    capacity_cli.add_parser(sub)
    kb_cli.add_parser(sub)
    doctor_cli.add_parser(sub)
    configfile.add_parser(sub)
    voices_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.command == "loadtest":
        return loadtest.main(args)
    if args.command == "capacity":
        return capacity_cli.main(args)
    if args.command == "kb":
        return kb_cli.main(args)
    if args.command == "doctor":
        return doctor_cli.main(args)
    if args.command == "config":
        return configfile.main(args)
    if args.command == "voices":
        return voices_cli.main(args)
    if args.command == "engines":
        _logging(args.log_level)
        settings = EngineSettings(asr_model=args.asr_model, asr_threads=args.asr_threads,
                                  tts_voice=args.tts_voice)
        asyncio.run(serve_engines(settings, args.host, args.port))
        return 0
    if args.command == "serve":
        _logging(args.log_level)
        try:
            config = build_config(args)
            workers = worker_count(args.workers)
            tls_context(config)  # a bad certificate or key: said now, not after model loading
        except (ConfigError, ValueError) as exc:
            print(f"callbot: bad configuration: {exc}", file=sys.stderr)
            return 2
        if args.print_config:
            sys.stdout.write(configfile.effective_toml(config))
            return 0
        if config.safety.redact_pii:  # phones, e-mails, card numbers never reach the log
            for handler in logging.getLogger().handlers:
                handler.addFilter(PiiRedactingFilter())
        if workers > 1 and args.worker_index is None:
            return supervise(_worker_argv(argv), workers, config.limits.max_calls,
                             config.cluster.redis_url,
                             forward_key=config.cluster.forward_key() is not None)
        asyncio.run(serve(config, worker_index=args.worker_index))
    return 0


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.addFilter(CallIdFilter())


def _worker_argv(argv: list[str]) -> list[str]:
    """The serve flags a worker gets (the supervisor sets --cluster and --max-calls)."""
    dropped = ("--workers", "--cluster", "--max-calls", "--worker-index")
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if i == 0 and arg == "serve":
            continue
        name = arg.split("=", 1)[0]
        if name in dropped:
            skip = "=" not in arg
            continue
        out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main())
