"""`callbot doctor`: a working install says so; a broken one names the fix.

Runs the real command in a subprocess (its own PATH and config), nothing mocked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def doctor(*args: str, path: str | None = None) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("CALLBOT_")}
    if path is not None:
        env["PATH"] = path
    done = subprocess.run([sys.executable, "-m", "callbot", "doctor", "--json", *args],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    return done.returncode, json.loads(done.stdout) if done.stdout.startswith("{") else {
        "stdout": done.stdout, "stderr": done.stderr}


def by_name(report: dict[str, Any], prefix: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"].startswith(prefix))



def test_a_working_install_says_so() -> None:
    code, report = doctor("--port", str(free_port()))
    assert code == 0 and report["ok"], report
    for prefix in ("speech recognition model (tiny.en)", "voice (Piper)", "language model",
                   "listen address"):
        assert by_name(report, prefix)["status"] == "ok", report


def test_missing_espeak_for_a_configured_language_names_the_apt_package(
        tmp_path: Path) -> None:
    config = tmp_path / "callbot.toml"
    config.write_text('languages = ["en", "de"]\n[engines]\nasr_model = "auto"\n')
    empty = tmp_path / "bin"
    empty.mkdir()  # a PATH with no espeak-ng (nor anything else)
    code, report = doctor("--config", str(config), "--port", str(free_port()),
                          path=str(empty))
    assert code == 1 and not report["ok"], report
    espeak = by_name(report, "espeak-ng")
    assert espeak["status"] == "fail" and "apt-get install espeak-ng" in espeak["fix"], espeak
    assert "de" in espeak["detail"]
    assert by_name(report, "chromium")["status"] == "warn"  # optional: tests only


def test_a_voice_that_is_not_installed_and_a_busy_port_are_named(tmp_path: Path) -> None:
    config = tmp_path / "callbot.toml"
    config.write_text('[engines]\ntts_voice = "en_GB-nobody-medium"\n')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, report = doctor("--config", str(config), "--port", str(port))
    assert code == 1, report
    voice = by_name(report, "voice (Piper)")
    assert voice["status"] == "fail" and "en_GB-nobody-medium" in voice["detail"], voice
    assert "en_US-joe-medium" in voice["fix"]
    listen = by_name(report, "listen address")
    assert listen["status"] == "fail" and str(port) in listen["fix"], listen


def test_a_config_that_does_not_parse_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "callbot.toml"
    config.write_text("port = 0\n")
    code, report = doctor("--config", str(config))
    assert code == 2 and "port" in report["stdout"], report


def test_load_loads_every_configured_model_offline() -> None:
    """--load: the real models load and run once with the hub offline, then are closed."""
    code, report = doctor("--load", "--port", str(free_port()))
    assert code == 0, report
    loaded = by_name(report, "models load offline")
    # the default brain (Qwen2.5 1.5B, assembled from its packages on first use)
    assert loaded["status"] == "ok" and "qwen2.5" in loaded["detail"].lower(), loaded
