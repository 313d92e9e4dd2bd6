"""State that must agree across workers and nodes, behind one small interface.

`SharedStore` holds what a single process cannot decide alone: the call registry entries
(which node owns a call, how it ended), per-client concurrency, the set-up rate buckets and
single-use call-token nonces. `LocalStore` (the default) keeps all of it in this process;
`signalling.cluster.RedisStore` keeps it in Redis so that every worker and node sees the same.
Live media objects (`Call`) never leave the process that negotiated them: the store only
knows their ids, owners and a few descriptive fields.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

from callbot.signalling.ratelimit import ClientLimiter, RateLimited


class ClusterUnavailable(Exception):
    """The shared store cannot be reached: no new call can be admitted safely."""


@dataclass(frozen=True)
class TicketLimits:
    """Bounds on single-use tickets (Realtime client secrets) in the store: how fast one
    client may mint them, how many of its own may be live (minting more drops its oldest,
    never another client's), and how many may be live in all (beyond: refused)."""

    per_minute: float = 20.0
    per_client: int = 50
    total: int = 10_000

    def refusal(self) -> RateLimited:
        return RateLimited(f"at most {self.total} unused client secrets may be live; try "
                           "again when some have expired or been used", 60.0)


class SharedStore(Protocol):
    node_id: str

    @property
    def available(self) -> bool:
        """False while the store is unreachable: new calls are refused (503)."""
        ...

    @property
    def clustered(self) -> bool:
        """True when other workers/nodes share this store (offers may be forwarded)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def announce(self) -> None:
        """Publish this node's load and draining flag now (not at the next heartbeat)."""
        ...

    async def nodes(self) -> list[dict[str, Any]]:
        """The live workers/nodes: id, url, capacity, load, draining."""
        ...

    async def use_nonce(self, nonce: str, exp: float) -> bool:
        """Record a call token's nonce; False if any worker/node used it before."""
        ...

    async def admit(self, client: str) -> None:
        """Count a new call of `client` or raise `RateLimited` (nothing counted then)."""
        ...

    async def release(self, client: str) -> None: ...

    async def call_started(self, call_id: str, client: str, info: dict[str, Any]) -> None: ...

    async def call_ended(self, call_id: str, client: str, reason: str) -> None: ...

    async def list_calls(self) -> list[dict[str, Any]]:
        """Entries of the live calls of every worker/node (`call_id`, `node`, ...)."""
        ...

    async def call_record(self, call_id: str) -> dict[str, Any] | None:
        """A live or recently ended call's entry (`state`, `reason` once ended)."""
        ...

    async def hangup(self, call_id: str) -> bool:
        """Ask the worker/node that owns a call to end it; False if no live owner has it."""
        ...

    async def pick_node(self) -> str | None:
        """The URL of another node with free slots (the most), for an offer this one cannot
        take; None when every node is full."""
        ...

    async def put_ticket(self, client: str, key: str, value: str, ttl_s: float,
                         limits: TicketLimits) -> None:
        """Keep a single-use ticket (`key` is a digest of the secret, never the secret) for
        `ttl_s`, minted by `client`; raises `RateLimited` past `limits` (nothing kept)."""
        ...

    async def take_ticket(self, key: str) -> str | None:
        """The ticket's value, once: any worker/node may take it, none twice."""
        ...


class LocalStore:
    """One process is the whole deployment: the in-process limiter and registry suffice.

    (Call-token nonces are checked by `auth.NonceStore` inside the Authenticator.)"""

    clustered = False
    available = True
    KEEP_ENDED = 1000

    def __init__(self, limiter: ClientLimiter, node_id: str = "local") -> None:
        self.node_id = node_id
        self.limiter = limiter
        self._live: dict[str, dict[str, Any]] = {}
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        # Tickets: key -> (client, value, expires at), oldest first; per client, its keys.
        self._tickets: OrderedDict[str, tuple[str, str, float]] = OrderedDict()
        self._by_client: dict[str, OrderedDict[str, None]] = {}
        self._mint_rate: ClientLimiter | None = None
        self._tickets_swept = 0.0
        self._sweep_at = 0  # the total limit: sweep whenever the store is that full

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def announce(self) -> None:
        pass

    async def nodes(self) -> list[dict[str, Any]]:
        return []

    async def use_nonce(self, nonce: str, exp: float) -> bool:
        return True  # the Authenticator's own NonceStore already refused a second use

    async def admit(self, client: str) -> None:
        self.limiter.admit(client)

    async def release(self, client: str) -> None:
        self.limiter.release(client)

    async def call_started(self, call_id: str, client: str, info: dict[str, Any]) -> None:
        self._live[call_id] = {"call_id": call_id, "node": self.node_id, "state": "active",
                               "client": client, **info}

    async def call_ended(self, call_id: str, client: str, reason: str) -> None:
        entry = self._live.pop(call_id, {"call_id": call_id, "node": self.node_id})
        entry.update(state="ended", reason=reason, ended_at=time.time())
        self._ended[call_id] = entry
        while len(self._ended) > self.KEEP_ENDED:
            self._ended.popitem(last=False)

    async def list_calls(self) -> list[dict[str, Any]]:
        return list(self._live.values())

    async def call_record(self, call_id: str) -> dict[str, Any] | None:
        return self._live.get(call_id) or self._ended.get(call_id)

    async def hangup(self, call_id: str) -> bool:
        return False  # a local call is ended by the route itself

    async def pick_node(self) -> str | None:
        return None

    async def put_ticket(self, client: str, key: str, value: str, ttl_s: float,
                         limits: TicketLimits) -> None:
        if self._mint_rate is None or self._mint_rate.rate_per_s != limits.per_minute / 60:
            self._mint_rate = ClientLimiter(1, limits.per_minute)
        now = time.time()
        self._sweep_at = limits.total
        self._expire_tickets(now)
        mine = self._by_client.setdefault(client, OrderedDict())
        if len(mine) < limits.per_client and len(self._tickets) >= limits.total:
            raise limits.refusal()
        self._mint_rate.take(client)  # raises RateLimited
        while len(mine) >= limits.per_client:  # the client's own oldest go, no one else's
            self._tickets.pop(mine.popitem(last=False)[0], None)
        self._tickets[key] = (client, value, now + ttl_s)
        mine[key] = None

    async def take_ticket(self, key: str) -> str | None:
        ticket = self._tickets.pop(key, None)
        if ticket is None:
            return None
        self._forget(ticket[0], key)
        return ticket[1] if ticket[2] > time.time() else None

    def _forget(self, client: str, key: str) -> None:
        mine = self._by_client.get(client)
        if mine is not None:
            mine.pop(key, None)
            if not mine:
                del self._by_client[client]

    def _expire_tickets(self, now: float) -> None:
        # Tickets have different lives (10 s to 2 h): all are looked at, at most once a
        # second (or when the store is full), so a flood of mints stays O(1) each.
        if now - self._tickets_swept < 1.0 and len(self._tickets) < self._sweep_at:
            return
        self._tickets_swept = now
        expired = [k for k, (_, _, exp) in self._tickets.items() if exp <= now]
        for key in expired:
            self._forget(self._tickets.pop(key)[0], key)
