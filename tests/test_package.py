"""The package's shape: one `callbot` namespace, the embedding surface, settings checked when
built, one ICE setting per process, call ids on log lines, the layering rules."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from aiohttp import web

import callbot
from callbot.pipeline.calllog import CALL_ID, CallIdFilter
from callbot.pipeline.errors import PipelineError, SettingsError
from callbot.pipeline.settings import EndpointingSettings, ReplySettings, TurnSettings
from callbot.rtc.errors import MediaSettingsConflict, RtcError
from callbot.rtc.ice import claim_host_addresses, release_host_addresses
from callbot.signalling.config import AuthSettings, CallbotConfig, ConfigError, Limits
from callbot.signalling.errors import ApiError, SignallingError

ROOT = Path(__file__).resolve().parents[1]
SURFACE = ["create_app", "mount", "CallbotConfig", "CallHooks", "CallOptions", "Tool",
           "IceServer", "mint_call_token", "CallHandle"]


def test_the_embedding_surface_is_importable_from_callbot() -> None:
    for name in SURFACE:
        assert getattr(callbot, name) is not None, name
    assert set(SURFACE) <= set(callbot.__all__)


def test_an_installed_wheel_holds_only_the_callbot_namespace(tmp_path: Path) -> None:
    """Built like `pip install .` would, then imported from outside the checkout."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("callbot-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "site")
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"callbot"}
    for expected in ("callbot/py.typed", "callbot/rtc/tracks.py", "callbot/pipeline/session.py",
                     "callbot/signalling/app.py", "callbot/web_demo/index.html",
                     "callbot/loadtest/caller.py"):
        assert expected in names
    probe = ("import importlib.util as u, callbot; "
             "print([m for m in ('rtc','pipeline','signalling','web_demo') if u.find_spec(m)]); "
             "print(callbot.__file__)")
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, "
                          f"{str(tmp_path / 'site')!r}); {probe}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    leaked, origin = out.splitlines()
    assert leaked == "[]"
    assert origin.startswith(str(tmp_path / "site"))


def test_importing_the_pipeline_does_not_pull_in_webrtc() -> None:
    code = ("import sys, callbot.pipeline.session, callbot.pipeline.events; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('aiortc', 'aioice', 'aiohttp')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    assert out == "[]"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("pipeline", ("aiortc", "aioice", "callbot.rtc", "callbot.signalling")),
    ("rtc", ("callbot.pipeline", "callbot.signalling", "faster_whisper", "piper",
             "llama_cpp", "onnxruntime")),
])
def test_layering(folder: str, forbidden: tuple[str, ...]) -> None:
    for path in (ROOT / folder).rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith(forbidden), f"{path.relative_to(ROOT)} imports {name}"


def test_no_top_level_layer_imports_anywhere() -> None:
    """Code and tests import `callbot.<layer>`, never the bare folder names."""
    for folder in ("pipeline", "rtc", "signalling", "callbot", "tests", "bench", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in _imports(path):
                assert name.split(".")[0] not in ("pipeline", "rtc", "signalling", "web_demo"), (
                    f"{path.relative_to(ROOT)} imports {name}")


@pytest.mark.parametrize(("build", "message"), [
    (lambda: CallbotConfig(port=0), "port"),
    (lambda: CallbotConfig(ice_hosts=("not-an-ip",)), "ice_hosts"),
    (lambda: AuthSettings(mode="sometimes"), "mode"),
    (lambda: Limits(max_calls=0), "max_calls"),
    (lambda: EndpointingSettings(vad_aggressiveness=7), "vad_aggressiveness"),
    (lambda: ReplySettings(max_tokens=0), "max_tokens"),
    (lambda: ReplySettings(temperature=5.0), "temperature"),
])
def test_settings_are_checked_when_built_in_python(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_config_file_errors_name_the_nested_key() -> None:
    from callbot.signalling.config import from_mapping

    with pytest.raises(ConfigError, match=r"turn\.endpointing\.vad_aggressiveness"):
        from_mapping({"turn": {"endpointing": {"vad_aggressiveness": 9}}})
    with pytest.raises(ConfigError, match=r"turn\.reply\.bogus: unknown setting"):
        from_mapping({"turn": {"reply": {"bogus": 1}}})
    config = from_mapping({"turn": {"reply": {"max_tokens": 30},
                                    "endpointing": {"question_end_ms": 250}}})
    assert config.turn == TurnSettings(endpointing=EndpointingSettings(question_end_ms=250),
                                       reply=ReplySettings(max_tokens=30, hold_after_s=0.6))
    # hold_after_s unset follows the model: 0.6 s with the default 1.5B model


def test_one_base_error_per_layer() -> None:
    assert issubclass(SettingsError, PipelineError)
    assert issubclass(MediaSettingsConflict, RtcError)
    assert issubclass(ApiError, SignallingError) and issubclass(ConfigError, SignallingError)


def test_conflicting_ice_hosts_in_one_process_are_refused() -> None:
    first = claim_host_addresses(["127.0.0.1"])
    try:
        same = claim_host_addresses(["127.0.0.1"])  # the same setting twice is fine
        release_host_addresses(same)
        with pytest.raises(MediaSettingsConflict, match="process-wide"):
            claim_host_addresses(["127.0.0.2"])
    finally:
        release_host_addresses(first)


def test_mounting_two_apps_with_different_ice_hosts_is_refused(engines) -> None:
    parent = web.Application()
    callbot.mount(parent, "/a", CallbotConfig(ice_hosts=("127.0.0.1",)), engines=engines)
    callbot.mount(parent, "/b", CallbotConfig(ice_hosts=("127.0.0.1",)), engines=engines)
    with pytest.raises(MediaSettingsConflict, match="process-wide"):
        callbot.mount(parent, "/c", CallbotConfig(ice_hosts=("127.0.0.9",)), engines=engines)


def test_log_records_carry_the_call_id() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(CallIdFilter())
    log = logging.getLogger("callbot.test")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        log.info("outside")
        token = CALL_ID.set("abc123")
        try:
            log.info("inside")
        finally:
            CALL_ID.reset(token)
    finally:
        log.removeHandler(handler)
    assert [r.call_id for r in records] == ["-", "abc123"]  # type: ignore[attr-defined]
