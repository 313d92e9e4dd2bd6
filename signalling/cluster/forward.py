"""Hand an offer this node cannot take to another node of the cluster.

The media of a call lives where its answer was made, so a full (or draining) node does not
negotiate: it forwards the whole `POST /v1/calls` to the node with the most free slots and
passes the answer back. The forwarded request carries `X-Callbot-Forwarded`, signed with the
cluster's secret: the receiving node then treats the original caller's address as the
client (per-client limits) and never forwards it again.
"""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web

from callbot.signalling.errors import ApiError

log = logging.getLogger(__name__)

FORWARD_HEADER = "X-Callbot-Forwarded"
NODE_HEADER = "X-Callbot-Node"
_PASSED = ("Authorization", "Content-Type", "Origin", "User-Agent")

async def forward_offer(request: web.Request, session: aiohttp.ClientSession, target: str,
                        signed: str) -> web.Response:
    body = await request.read()
    headers = {k: request.headers[k] for k in _PASSED if k in request.headers}
    headers[FORWARD_HEADER] = signed
    url = target.rstrip("/") + "/v1/calls"
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            kept = {k: v for k, v in response.headers.items()
                    if k in ("Content-Type", "Retry-After")}
            kept[NODE_HEADER] = target
            return web.Response(body=payload, status=response.status, headers=kept)
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("forwarding an offer to %s failed: %s", target, exc)
        raise ApiError(503, "cluster_full",
                       "this node is full and the node chosen to take the call did not answer; "
                       "try again", headers={"Retry-After": "2"}) from None
