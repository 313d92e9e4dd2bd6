"""`callbot loadtest` against real servers, at a small size: figures present and sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from callbot import loadtest
from support import speech
from tests.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def _check_report(report: dict, calls: int) -> None:
    summary = report["summary"]
    assert summary["calls_ok"] == calls, summary["failures"]
    assert summary["calls_failed"] == 0
    results = report["results"]
    assert len(results) == calls
    for result in results:
        assert result["ok"], result["reason"]
        assert 0 < result["setup_ms"] < 10_000
        assert result["gaps"] >= 0
        assert len(result["turns"]) == 1
        turn = result["turns"][0]
        assert 0 < turn["v2v_ms"] < 10_000, turn
        assert 0.0 <= turn["wer"] <= 1.0, turn
        assert turn["transcript"]
        assert "first_audio_ms" in turn["server"]
    figures = summary["figures"]
    for name in ("setup_ms", "v2v_ms", "wer", "gaps", "server.asr_ms"):
        assert figures[name]["n"] >= 1, name
        assert figures[name]["p50"] <= figures[name]["p95"] <= figures[name]["max"]


def test_scenario_files_are_validated(tmp_path: Path, question: speech.Clip) -> None:
    clip = question.write_wav(tmp_path / "q.wav")
    (tmp_path / "ok.yaml").write_text(f"- say: {clip.name}\n  text: hi\n- pause: 0.5\n")
    steps = loadtest.load_scenario(tmp_path / "ok.yaml")
    assert [s.kind for s in steps] == ["say", "pause"]
    assert steps[0].path == str(clip)
    assert [s.kind for s in loadtest.plan_steps(steps, 3)] == ["say", "pause", "say", "pause",
                                                                "say"]
    for bad in ([], [{"pause": -1}], [{"say": "missing.wav"}], [{"pause": 1}],
                [{"say": clip.name, "pause": 1}]):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(loadtest.ScenarioError):
            loadtest.load_scenario(tmp_path / "bad.json")


async def test_loadtest_in_process(server: str, question: speech.Clip, tmp_path: Path) -> None:
    clip = question.write_wav(tmp_path / "question.wav")
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps([{"say": clip.name, "text": question.text}]))
    options = loadtest.LoadOptions(
        url=server, calls=2, procs=1, ramp_s=0.5, turns=1,
        scenario=loadtest.load_scenario(scenario), ice_hosts=("127.0.0.1",),
    )
    report = await loadtest.run_loadtest(options)
    _check_report(report, 2)
    assert loadtest.exit_code(report, None) == 0
    assert loadtest.exit_code(report, 1) == 1
    text = loadtest.format_summary(report, 1)
    assert "v2v_ms" in text and "2 ok, 0 failed" in text and "FAIL" in text



def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("server did not become healthy")


def test_loadtest_cli_against_subprocess_server(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "callbot", "serve", "--port", str(port),
         "--ice-host", "127.0.0.1", "--log-level", "WARNING", "--auth-token", "s3cret-load"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        _wait_healthy(url, server)
        out = tmp_path / "load.json"
        # The built-in scenario (Piper-synthesized questions), one turn a call; a 1 ms budget
        # nothing can meet: the exit code must say so.
        run = subprocess.run(
            [sys.executable, "-m", "callbot", "loadtest", "--url", url, "--calls", "2",
             "--procs", "1", "--turns", "1", "--json", str(out), "--max-p95-ms", "1",
             # A token is configured: every offer must carry it (the upgrade table's advice).
             "--header", "Authorization: Bearer s3cret-load"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )
        assert run.returncode == 1, run.stdout + run.stderr
        assert "v2v_ms" in run.stdout and "FAIL: v2v p95" in run.stdout, run.stdout
        report = json.loads(out.read_text())
        _check_report(report, 2)
        assert report["scenario"][0]["kind"] == "say"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_header_flag_is_parsed_and_checked() -> None:
    from callbot.loadtest.cli import parse_headers
    from callbot.loadtest.scenario import ScenarioError

    assert parse_headers(["Authorization: Bearer a:b", "X-Trace:1"]) == (
        ("Authorization", "Bearer a:b"), ("X-Trace", "1"))
    assert parse_headers(None) == ()
    for bad in ("no-colon", ": empty name"):
        with pytest.raises(ScenarioError):
            parse_headers([bad])


async def test_a_caller_saying_yeah_over_the_reply_does_not_stop_it(
        server: str, tmp_path: Path) -> None:
    """A real call: the synthetic caller asks for a long answer, then says "Yeah." over it
    (the `backchannel` step): the bot pauses, hears a backchannel and goes on."""
    ask = speech.espeak("Tell me about spiders, their legs, eyes and webs, in detail.",
                        48_000).padded(0.5, 1.5)
    yeah = speech.espeak("Yeah.", 48_000).padded(0.1, 0.4)
    ask.write_wav(tmp_path / "ask.wav")
    yeah.write_wav(tmp_path / "yeah.wav")
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps([{"say": "ask.wav"}, {"backchannel": "yeah.wav"}]))
    options = loadtest.LoadOptions(url=server, calls=1, scenario=loadtest.load_scenario(scenario),
                                   ice_hosts=("127.0.0.1",))
    report = await loadtest.run_loadtest(options)
    result = report["results"][0]
    assert result["ok"], result["reason"]
    turn = result["turns"][1]
    assert turn["kind"] == "backchannel" and turn["backchannel_ok"], turn
