"""`callbot config --example` loads back into the defaults; `callbot serve --print-config`
prints the effective settings with every secret masked."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from callbot.signalling import cli
from callbot.signalling.cli.configfile import MASK, example_toml
from callbot.signalling.config import ENV_KEYS, CallbotConfig, from_mapping

ROOT = Path(__file__).resolve().parent.parent


def _keys(settings: Any, prefix: str = "") -> list[str]:
    out = []
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if dataclasses.is_dataclass(value):
            out += _keys(value, f"{prefix}{field.name}.")
        else:
            out.append(f"{prefix}{field.name}")
    return out


def test_the_example_loads_back_into_the_defaults(tmp_path: Path) -> None:
    text = example_toml()
    assert from_mapping(tomllib.loads(text)) == CallbotConfig()
    path = tmp_path / "callbot.toml"
    path.write_text(text)
    assert CallbotConfig.load(path, env={}) == CallbotConfig()


def test_the_example_names_every_setting_with_its_note() -> None:
    text = example_toml()
    lines = text.splitlines()
    tables = {line.strip("[]") for line in lines if line.startswith("[")}
    for key in _keys(CallbotConfig()):
        table, _, name = key.rpartition(".")
        assert not table or table in tables, table
        assert any(line.startswith((f"{name} = ", f"# {name} = ")) for line in lines), key
    assert "# concurrent calls; more get 503" in text  # the note beside `max_calls`


def test_config_without_what_to_print_is_a_usage_error(capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    assert cli.main(["config"]) == 2
    assert "--example" in capsys.readouterr().err


def test_print_config_masks_secrets_and_exits() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update(PYTHONPATH=str(ROOT), CALLBOT_LLM_API_KEY="sk-live-123",
               CALLBOT_AUTH_SIGNING_SECRET="signing-456",
               CALLBOT_CLUSTER="redis://:redispass789@10.0.0.5:6379/0")
    done = subprocess.run(
        [sys.executable, "-m", "callbot", "serve", "--port", "9123", "--auth-token", "tok-abc",
         "--admin-token", "adm-def", "--print-config"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for secret in ("sk-live-123", "signing-456", "redispass789", "tok-abc", "adm-def"):
        assert secret not in out
    printed = from_mapping(tomllib.loads(out))  # it is a configuration file too
    assert printed.port == 9123
    assert printed.auth.bearer_tokens == (MASK,) and printed.auth.admin_tokens == (MASK,)
    assert printed.engines.openai_api_key == MASK and printed.auth.signing_secret == MASK
    assert printed.cluster.redis_url == f"redis://:{MASK}@10.0.0.5:6379/0"
    assert "callbot: ready" not in out  # it exits: no server started
