"""ICE servers for the browser and a call through a TURN relay (issue 25): Debian's coturn on
loopback with a shared secret (the TURN REST convention), callbot configured with the same
secret. `GET /v1/ice_servers` hands out short-lived credentials and the relay-only policy;
a caller that offers and uses only relayed candidates (as a browser with
iceTransportPolicy "relay") gets a working call: coturn accepted the minted credentials.

Run inside a loopback-only network namespace:
    unshare -n sh -c 'ip link set lo up; python3 -m pytest -q tests/test_turn_relay.py'
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from callbot.loadtest.caller import SyntheticCaller
from callbot.rtc.ice import IceServer, turn_rest_credentials
from callbot.signalling.config import ConfigError, WebRtcSettings
from tests.conftest import LOOPBACK, TEST_CONFIG, ServerFactory, free_port

SECRET = "turn-shared-secret-for-tests"


def test_turn_rest_credentials_follow_the_coturn_convention() -> None:
    server = turn_rest_credentials(["turn:127.0.0.1:3478"], SECRET, ttl_s=600, user="alice",
                                   now=1_000_000)
    assert server.username == "1000600:alice"
    expected = base64.b64encode(hmac.new(SECRET.encode(), b"1000600:alice",
                                         hashlib.sha1).digest()).decode()
    assert server.credential == expected
    with pytest.raises(ConfigError):
        WebRtcSettings(turn_urls=("turn:x:3478",))  # no secret
    with pytest.raises(ConfigError):
        WebRtcSettings(turn_urls=("stun:x:3478",), turn_shared_secret=SECRET)
    with pytest.raises(ConfigError):
        WebRtcSettings(ice_transport_policy="none")


def _answers_stun(port: int) -> bool:
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.sendto(request, (LOOPBACK, port))
        try:
            return sock.recv(512)[:2] == b"\x01\x01"  # Binding Success Response
        except OSError:
            return False


@pytest.fixture(scope="module")
def coturn() -> Iterator[str]:
    binary = shutil.which("turnserver")
    assert binary, "coturn is not installed (apt-get install coturn)"
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="cb-coturn-"))
    log = folder / "turn.log"
    proc = subprocess.Popen(
        [binary, "-n", "--listening-ip", LOOPBACK, "--listening-port", str(port),
         "--relay-ip", LOOPBACK, "--min-port", "49160", "--max-port", "49200",
         "--use-auth-secret", "--static-auth-secret", SECRET, "--realm", "callbot.test",
         "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli", "--fingerprint",
         "--log-file", str(log), "--simple-log", "--pidfile", str(folder / "pid"),
         "--userdb", str(folder / "turndb")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not _answers_stun(port):  # a STUN binding request: the listener is up
        assert proc.poll() is None and time.monotonic() < deadline, \
            log.read_text() if log.exists() else "coturn did not start"
    yield f"turn:{LOOPBACK}:{port}?transport=udp"
    proc.terminate()
    proc.wait(10)
    print(log.read_text()[-3000:])
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.e2e
async def test_a_relay_only_call_through_coturn(start_server: ServerFactory, coturn: str) -> None:
    config = TEST_CONFIG.replace(webrtc=WebRtcSettings(
        turn_urls=(coturn,), turn_shared_secret=SECRET, turn_credential_ttl_s=300,
        ice_transport_policy="relay"))
    base = await start_server(config)
    async with aiohttp.ClientSession() as http, http.get(f"{base}/v1/ice_servers") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "no-store"
        given = await resp.json()
    assert given["ice_transport_policy"] == "relay"
    (turn,) = given["ice_servers"]
    assert turn["urls"] == [coturn]
    expiry, user = turn["username"].split(":", 1)
    assert 250 <= int(expiry) - time.time() <= 301 and user == f"ip-{LOOPBACK}"
    caller = SyntheticCaller(base, relay_only=True, ice_servers=(IceServer(
        urls=tuple(turn["urls"]), username=turn["username"], credential=turn["credential"]),))
    try:
        await caller.connect(timeout=30)
        mark = len(caller.events)
        caller.send({"type": "input.text", "text": "How many legs does a spider have?"})
        reply = await caller.wait_event("response.text.delta", timeout=120, after=mark)
        assert reply["delta"].strip()
    finally:
        await caller.hangup()


@pytest.mark.e2e
async def test_wrong_turn_credentials_get_no_relay(start_server: ServerFactory,
                                                  coturn: str) -> None:
    """The relay is real: credentials signed with another secret get no allocation."""
    bad = turn_rest_credentials([coturn], "not-the-secret", ttl_s=300, user="mallory")
    caller = SyntheticCaller(await start_server(), relay_only=True, ice_servers=(bad,))
    try:
        with pytest.raises(Exception, match="no relayed candidate"):
            await caller.connect(timeout=30)
    finally:
        await caller.hangup(delete=False)
