"""`callbot serve --tls-cert/--tls-key`: HTTPS on the server's own port (a self-signed
certificate made by `openssl`, on loopback), and clear errors for a half or broken setup."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from callbot.signalling import cli
from tests.conftest import LOOPBACK, free_port

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={LOOPBACK}", "-addext", f"subjectAltName=IP:{LOOPBACK}",
         "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


async def test_serve_speaks_https_with_the_given_certificate(
        certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "callbot", "serve", "--host", LOOPBACK, "--port", str(port),
        "--ice-host", LOOPBACK, "--asr-model", "tiny.en", "--language", "en",
        "--tls-cert", str(cert), "--tls-key", str(key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert server.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(180):
            while not any("ready" in line for line in output):
                line = (await server.stdout.readline()).decode()
                assert line, "".join(output)
                output.append(line)
        assert f"https://{LOOPBACK}:{port}/" in output[-1]
        trusted = ssl.create_default_context(cafile=str(cert))  # verifies chain and address
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://{LOOPBACK}:{port}/healthz", ssl=trusted) as resp:
                assert resp.status == 200
                assert "calls" in await resp.json()
            async with http.get(f"https://{LOOPBACK}:{port}/", ssl=trusted) as resp:
                assert resp.status == 200  # the page, over HTTPS: the microphone is allowed
            with pytest.raises(aiohttp.ClientError):  # no plain HTTP on the TLS port
                async with http.get(f"http://{LOOPBACK}:{port}/healthz") as resp:
                    await resp.read()
    finally:
        server.terminate()
        await server.wait()


def test_a_certificate_without_its_key_is_a_config_error(
        certificate: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = certificate
    assert cli.main(["serve", "--tls-cert", str(cert)]) == 2
    assert "tls_cert and tls_key" in capsys.readouterr().err
    assert cli.main(["serve", "--tls-cert", str(cert), "--tls-key", str(cert)]) == 2
    assert "cannot load" in capsys.readouterr().err  # said before any model loads
