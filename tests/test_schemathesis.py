"""Property-based API tests: schemathesis reads `/v1/openapi.json` from a running server and
sends generated requests to every operation; no 5xx, and every response matches the document.

The server runs in its own thread and event loop: schemathesis calls it with blocking HTTP.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")

from aiohttp import web  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from callbot.pipeline.engines import Engines  # noqa: E402
from callbot.signalling.app import create_app  # noqa: E402
from callbot.signalling.config import Limits  # noqa: E402
from tests.conftest import LOOPBACK, TEST_CONFIG  # noqa: E402

CONFIG = TEST_CONFIG.replace(
    limits=Limits(call_rate_per_minute=1_000_000, max_calls_per_client=1000)
)


@pytest.fixture(scope="module")
def threaded_server(engines: Engines) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    async def start() -> None:
        runner = web.AppRunner(create_app(CONFIG, engines=engines))
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, 0)
        await site.start()
        holder["runner"] = runner
        holder["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="schemathesis-server", daemon=True)
    thread.start()
    assert started.wait(30), "the server did not start"
    yield f"http://{LOOPBACK}:{holder['port']}"
    runner = holder["runner"]
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)  # type: ignore[attr-defined]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


@pytest.fixture(scope="module")
def api_schema(threaded_server: str):  # type: ignore[no-untyped-def]
    return schemathesis.openapi.from_url(f"{threaded_server}/v1/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case) -> None:  # type: ignore[no-untyped-def]
    # Every check but "schema-valid data is accepted": JSON Schema cannot say what a usable
    # SDP offer is, so a schema-valid `sdp` string is still (rightly) refused with a 4xx.
    case.call_and_validate(excluded_checks=[schemathesis.checks.positive_data_acceptance])
