"""`callbot serve` flags for auth and the announced public IP."""

from __future__ import annotations

import argparse

import pytest

from callbot import loadtest
from callbot.signalling import cli


def _serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    cli._serve_parser(sub)
    loadtest.add_parser(sub)
    return parser.parse_args(["serve", *argv])


def test_auth_flags_are_repeatable(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("CALLBOT_AUTH_TOKENS", "CALLBOT_ALLOWED_ORIGINS", "CALLBOT_ICE_PUBLIC_IP"):
        monkeypatch.delenv(var, raising=False)
    config = cli.build_config(_serve_args(
        "--auth-token", "t1", "--auth-token", "t2", "--allowed-origin", "https://a.example",
        "--allowed-origin", "https://b.example", "--ice-public-ip", "203.0.113.9"))
    assert config.auth.bearer_tokens == ("t1", "t2")
    assert config.auth.allowed_origins == ("https://a.example", "https://b.example")
    assert config.ice_public_ip == "203.0.113.9"
    plain = cli.build_config(_serve_args())
    assert plain.auth.bearer_tokens == () and plain.ice_public_ip is None


def test_bad_public_ip_flag_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--ice-public-ip", "nope"]) == 2
    assert "ice_public_ip" in capsys.readouterr().err
