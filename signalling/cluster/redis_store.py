"""Cluster-wide state in Redis: nodes, call registry, per-client limits, nonces, hang-ups.

Every worker of `callbot serve --workers N` and every node of `callbot serve --cluster URL`
is a *node* here. Keys (prefix `cb:`):

- `cb:nodes` (set of node ids); `cb:node:{id}` (hash: url, capacity, load, draining,
  pid, started); `cb:alive:{id}` (string with a TTL of `node_ttl_s`, renewed every
  `heartbeat_s`): a node whose alive key expired is dead.
- `cb:call:{call_id}` (hash: node, url, client, created, state, reason): kept for
  `ended_keep_s` after the call ends, so `GET /v1/calls/{id}` can say how it ended.
- `cb:ncalls:{id}` (set of the node's live call ids); `cb:nclients:{id}` (hash client ->
  live calls on that node): per-client concurrency is the sum over live nodes, so a dead
  node's counts vanish with it and a node rewrites its own after Redis comes back.
- `cb:rate:{client}` (hash tokens, ts; a token bucket with a TTL); `cb:nonce:{nonce}`
  (SET NX with the token's remaining life as TTL).
- `cb:cmd:{id}` (pub/sub channel): call ids the node must hang up (DELETE on another node).
- `cb:metrics:{id}`: the node's Prometheus text, for `/metrics` summed over the cluster.
- `cb:ticket:{digest}` (string with the ticket's TTL): a Realtime client secret's session,
  under a SHA-256 digest of the secret (whoever reads Redis cannot use it); `cb:tickets`
  (sorted set digest -> expiry) bounds them all, `cb:tickets:{client}` one client's (its
  oldest go first), `cb:mintrate:{client}` its mint rate (token bucket).

The key that signs forwarded offers (`X-Callbot-Forwarded`) is *not* in Redis: it comes
from the configuration (`cluster.forward_secret` or `forward_secret_file`; the `--workers`
supervisor makes one for its own workers), so reading Redis is not enough to forge a
caller's address. Redis is still trusted infrastructure (it holds the call registry and the
limits): keep it on a private network, with a password (`redis://:PASSWORD@host`) or TLS.

A node that sees another's alive key gone runs `REAP` (one Lua script, atomic): that node's
live calls become `state=ended, reason=node_lost`, its counts and registration go. Bound:
a kill -9'd node's calls are reported `node_lost` within `node_ttl_s + heartbeat_s` (plus
one Redis round trip) of its last heartbeat.

Redis unreachable: `available` turns False at the first failed operation; offers get 503
`cluster_unavailable`; live calls go on untouched; ends that could not be written are kept
and written, with the node's whole state, when a heartbeat succeeds again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from callbot.signalling.cluster.shared import ClusterUnavailable, TicketLimits
from callbot.signalling.ratelimit import ClientLimiter, RateLimited

log = logging.getLogger(__name__)

P = "cb:"

# Per-client concurrency (sum over live nodes) and token bucket, then count the call.
# ARGV: client, node, max_concurrent, rate_per_s, capacity, now, bucket_ttl_ms
_ADMIT = """
local client, me = ARGV[1], ARGV[2]
local maxc, rate, cap, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
local active = 0
for _, n in ipairs(redis.call('SMEMBERS', 'cb:nodes')) do
  if n == me or redis.call('EXISTS', 'cb:alive:' .. n) == 1 then
    active = active + tonumber(redis.call('HGET', 'cb:nclients:' .. n, client) or '0')
  end
end
if active >= maxc then return {1, 0} end
local key = 'cb:rate:' .. client
local b = redis.call('HMGET', key, 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = cap, now end
tokens = math.min(cap, tokens + (now - ts) * rate)
if tokens < 1 then return {2, tostring((1 - tokens) / rate)} end
redis.call('HSET', key, 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', key, ARGV[7])
redis.call('HINCRBY', 'cb:nclients:' .. me, client, 1)
return {0, 0}
"""

# Release one call of a client on this node (never below zero).
_RELEASE = """
local key = 'cb:nclients:' .. ARGV[1]
local left = redis.call('HINCRBY', key, ARGV[2], -1)
if left <= 0 then redis.call('HDEL', key, ARGV[2]) end
return left
"""

# Declare node ARGV[1] dead (if its alive key is really gone) and end its calls.
# ARGV: node, now, ended_keep_s.  Returns the call ids marked node_lost.
_REAP = """
local n = ARGV[1]
if redis.call('EXISTS', 'cb:alive:' .. n) == 1 then return {} end
local ids = redis.call('SMEMBERS', 'cb:ncalls:' .. n)
for _, id in ipairs(ids) do
  local key = 'cb:call:' .. id
  if redis.call('HGET', key, 'state') ~= 'ended' then
    redis.call('HSET', key, 'state', 'ended', 'reason', 'node_lost', 'ended_at', ARGV[2])
    redis.call('HINCRBY', 'cb:ended_reasons', 'node_lost', 1)
  end
  redis.call('EXPIRE', key, ARGV[3])
end
redis.call('DEL', 'cb:ncalls:' .. n, 'cb:nclients:' .. n, 'cb:node:' .. n, 'cb:metrics:' .. n)
redis.call('SREM', 'cb:nodes', n)
return ids
"""


# A single-use ticket: bucket (ARGV 4-5), then the bounds, then keep it.
# ARGV: digest, client, value, now, ttl_s, per_minute_rate_per_s, capacity, per_client, total
_TICKET_PUT = """
local h, client, value, now, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]),
  tonumber(ARGV[5])
local rate, cap, per_client, total = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9])
local mine = 'cb:tickets:' .. client
redis.call('ZREMRANGEBYSCORE', 'cb:tickets', '-inf', now)
redis.call('ZREMRANGEBYSCORE', mine, '-inf', now)
if redis.call('ZCARD', mine) < per_client and redis.call('ZCARD', 'cb:tickets') >= total then
  return {3, 0}
end
local key = 'cb:mintrate:' .. client
local b = redis.call('HMGET', key, 'tokens', 'ts')
local tokens, ts = tonumber(b[1]), tonumber(b[2])
if tokens == nil then tokens, ts = cap, now end
tokens = math.min(cap, tokens + (now - ts) * rate)
if tokens < 1 then return {2, tostring((1 - tokens) / rate)} end
redis.call('HSET', key, 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', key, math.floor(cap / rate * 1000) + 1000)
while redis.call('ZCARD', mine) >= per_client do
  local oldest = redis.call('ZPOPMIN', mine)[1]
  redis.call('DEL', 'cb:ticket:' .. oldest)
  redis.call('ZREM', 'cb:tickets', oldest)
end
redis.call('SET', 'cb:ticket:' .. h, client .. '\\n' .. value, 'PX', math.floor(ttl * 1000))
redis.call('ZADD', 'cb:tickets', now + ttl, h)
redis.call('ZADD', mine, now + ttl, h)
redis.call('PEXPIRE', mine, math.floor(ttl * 1000) + 1000)
return {0, 0}
"""

# Take a ticket once: GET + DEL in one step, and out of the bounds' sets.
_TICKET_TAKE = """
local stored = redis.call('GET', 'cb:ticket:' .. ARGV[1])
if not stored then return false end
redis.call('DEL', 'cb:ticket:' .. ARGV[1])
local cut = string.find(stored, '\\n', 1, true)
redis.call('ZREM', 'cb:tickets', ARGV[1])
redis.call('ZREM', 'cb:tickets:' .. string.sub(stored, 1, cut - 1), ARGV[1])
return string.sub(stored, cut + 1)
"""


@dataclass(frozen=True)
class NodeView:
    node_id: str
    url: str
    capacity: int
    load: int
    draining: bool

    @property
    def free(self) -> int:
        return 0 if self.draining else max(0, self.capacity - self.load)


class RedisStore:
    """`SharedStore` in Redis (see the module doc for the keys)."""

    clustered = True

    def __init__(self, url: str, *, advertise_url: str, capacity: int, limiter: ClientLimiter,
                 load: Callable[[], int], draining: Callable[[], bool],
                 hang_up: Callable[[str], Awaitable[None]],
                 live_calls: Callable[[], list[tuple[str, str]]],
                 metrics_text: Callable[[], bytes] | None = None,
                 node_ttl_s: float = 3.0, heartbeat_s: float = 1.0,
                 ended_keep_s: float = 3600.0, op_timeout_s: float = 1.0,
                 forward_key: bytes | None = None,
                 live_capacity: Callable[[], int] | None = None) -> None:
        self.node_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.url = url
        self.advertise_url = advertise_url.rstrip("/")
        self.capacity = capacity
        # The measured capacity now (server/capacity.py), advertised with each heartbeat so
        # offers are handed to nodes that can still answer in time.
        self._live_capacity = live_capacity
        self.limiter = limiter  # only its settings: max_concurrent, rate_per_s, capacity
        self._load, self._draining, self._hang_up = load, draining, hang_up
        self._live_calls, self._metrics_text = live_calls, metrics_text
        self.node_ttl_s, self.heartbeat_s, self.ended_keep_s = node_ttl_s, heartbeat_s, ended_keep_s
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=op_timeout_s, socket_connect_timeout=op_timeout_s,
            decode_responses=True, health_check_interval=5)
        self._admit = self.redis.register_script(_ADMIT)
        self._release = self.redis.register_script(_RELEASE)
        self._reap = self.redis.register_script(_REAP)
        self._ticket_put = self.redis.register_script(_TICKET_PUT)
        self._ticket_take = self.redis.register_script(_TICKET_TAKE)
        self._available = False
        self._synced = False  # the node's entries in Redis match this process
        self._pending_ends: dict[str, tuple[str, str]] = {}  # call id -> (client, reason)
        self._info: dict[str, dict[str, str]] = {}  # live call id -> its extra fields (owner)
        # Signs forwarded offers; None: this node neither forwards nor accepts them.
        self.forward_key = forward_key
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self.lost_seen: list[str] = []  # call ids this node reaped (for logs/tests)
        self.started = time.time()

    # ---- life cycle --------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self._available

    async def start(self) -> None:
        try:
            await self._heartbeat_once()
        except (RedisError, OSError) as exc:
            log.warning("cluster: Redis at %s unreachable at start (%s); new calls are refused "
                        "until it answers", self.url, exc)
        self._tasks = [asyncio.ensure_future(self._heartbeat_loop()),
                       asyncio.ensure_future(self._command_loop())]

    def http(self) -> aiohttp.ClientSession:
        """The client session offers are forwarded with."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._http

    async def close(self) -> None:
        """Leave the cluster (after the node's calls ended)."""
        if self._http is not None:
            await self._http.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            async with self.redis.pipeline(transaction=True) as p:
                n = self.node_id
                p.srem(P + "nodes", n)
                p.delete(P + f"alive:{n}", P + f"node:{n}", P + f"ncalls:{n}",
                         P + f"nclients:{n}", P + f"metrics:{n}")
                await p.execute()
        except (RedisError, OSError) as exc:
            log.warning("cluster: could not deregister %s: %s", self.node_id, exc)
        await self.redis.aclose()

    def _down(self, exc: BaseException) -> None:
        if self._available:
            log.error("cluster: Redis at %s unreachable (%s): refusing new calls, live calls "
                      "go on", self.url, exc)
        self._available = False
        self._synced = False

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._heartbeat_once()
            except (RedisError, OSError) as exc:
                self._down(exc)
            except Exception:
                log.exception("cluster: heartbeat failed")

    async def _heartbeat_once(self) -> None:
        r, n = self.redis, self.node_id
        ttl_ms = int(self.node_ttl_s * 1000)
        async with r.pipeline(transaction=True) as p:
            p.set(P + f"alive:{n}", "1", px=ttl_ms)
            p.sadd(P + "nodes", n)
            p.hset(P + f"node:{n}", mapping=self._node_fields())
            p.exists(P + f"ncalls:{n}")
            if self._metrics_text is not None:
                p.set(P + f"metrics:{n}", self._metrics_text().decode(), px=ttl_ms)
            result = await p.execute()
        if not self._synced or (not result[3] and self._live_calls()):
            await self._resync()
        if not self._available:
            log.info("cluster: Redis at %s reachable; node %s (%s) takes calls", self.url, n,
                     self.advertise_url)
        self._available = True
        await self._reap_dead()

    def _node_fields(self) -> dict[Any, str]:
        capacity = self._live_capacity() if self._live_capacity is not None else self.capacity
        return {"url": self.advertise_url, "capacity": str(capacity),
                "load": str(self._load()), "draining": "1" if self._draining() else "0",
                "pid": str(os.getpid()), "started": str(self.started)}

    async def _resync(self) -> None:
        """Rewrite this node's entries from the truth in this process (after Redis was away
        or restarted empty)."""
        r, n = self.redis, self.node_id
        live = self._live_calls()
        counts: dict[str, int] = {}
        for _, client in live:
            counts[client] = counts.get(client, 0) + 1
        async with r.pipeline(transaction=True) as p:
            p.delete(P + f"ncalls:{n}", P + f"nclients:{n}")
            for call_id, client in live:
                p.sadd(P + f"ncalls:{n}", call_id)
                entry: dict[Any, str] = {"call_id": call_id, "node": n,
                                         "url": self.advertise_url, "client": client,
                                         "state": "active", **self._info.get(call_id, {})}
                p.hset(P + f"call:{call_id}", mapping=entry)
                p.persist(P + f"call:{call_id}")
            if counts:
                p.hset(P + f"nclients:{n}", mapping={k: str(v) for k, v in counts.items()})
            for call_id, (_, reason) in self._pending_ends.items():
                p.hset(P + f"call:{call_id}", mapping={
                    "call_id": call_id, "node": n, "state": "ended", "reason": reason,
                    "ended_at": str(time.time())})
                p.expire(P + f"call:{call_id}", int(self.ended_keep_s))
            await p.execute()
        self._pending_ends.clear()
        self._synced = True
        log.info("cluster: node %s state written (%d live calls)", n, len(live))

    async def _reap_dead(self) -> None:
        r = self.redis
        nodes = await r.smembers(P + "nodes")
        others = [str(x) for x in nodes if x != self.node_id]
        if not others:
            return
        alive = await r.exists(*[P + f"alive:{x}" for x in others])
        if alive == len(others):
            return
        for node in others:
            if await r.exists(P + f"alive:{node}"):
                continue
            ids = await self._reap(args=[node, str(time.time()), int(self.ended_keep_s)])
            if ids:
                log.warning("cluster: node %s lost; its calls %s ended (node_lost)", node, ids)
                self.lost_seen.extend(str(i) for i in ids)

    async def _command_loop(self) -> None:
        """Hang-ups asked by other nodes (DELETE /v1/calls/{id} that reached them)."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(P + f"cmd:{self.node_id}")
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                       timeout=1.0)
                    if message is not None and isinstance(message.get("data"), str):
                        asyncio.ensure_future(self._hang_up(message["data"]))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:  # the heartbeat judges Redis; resubscribe
                log.debug("cluster: command channel: %s", exc)
                await asyncio.sleep(self.heartbeat_s)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis 8
                except (RedisError, OSError):
                    pass

    async def _guard(self, op: Awaitable[Any]) -> Any:
        if not self._available:
            if asyncio.iscoroutine(op):
                op.close()
            raise ClusterUnavailable(f"the cluster store ({self.url}) is unreachable")
        try:
            return await op
        except (RedisError, OSError) as exc:
            self._down(exc)
            raise ClusterUnavailable(f"the cluster store ({self.url}) is unreachable: {exc}"
                                     ) from exc

    # ---- SharedStore -------------------------------------------------------------------------

    async def use_nonce(self, nonce: str, exp: float) -> bool:
        ttl = max(1, int(exp - time.time()) + 1)
        return bool(await self._guard(self.redis.set(P + f"nonce:{nonce}", "1", nx=True, ex=ttl)))

    async def admit(self, client: str) -> None:
        lim = self.limiter
        bucket_ttl_ms = int(lim.capacity / lim.rate_per_s * 1000) + 1000
        status, value = await self._guard(self._admit(args=[
            client, self.node_id, lim.max_concurrent, repr(lim.rate_per_s), repr(lim.capacity),
            repr(time.time()), bucket_ttl_ms]))
        if int(status) == 1:
            raise RateLimited(f"at most {lim.max_concurrent} concurrent calls per client",
                              lim.CONCURRENCY_RETRY_S)
        if int(status) == 2:
            raise RateLimited("too many calls started; slow down", float(value))

    async def release(self, client: str) -> None:
        try:
            await self._guard(self._release(args=[self.node_id, client]))
        except ClusterUnavailable:
            self._synced = False  # rewritten from the live calls once Redis is back

    async def call_started(self, call_id: str, client: str, info: dict[str, Any]) -> None:
        self._info[call_id] = {k: str(v) for k, v in info.items()}  # kept for a resync
        fields: dict[Any, str] = {
            "call_id": call_id, "node": self.node_id, "url": self.advertise_url,
            "client": client, "state": "active", "created": str(time.time()),
            **{k: str(v) for k, v in info.items()}}
        try:
            async with self.redis.pipeline(transaction=True) as p:
                p.hset(P + f"call:{call_id}", mapping=fields)
                p.sadd(P + f"ncalls:{self.node_id}", call_id)
                p.hset(P + f"node:{self.node_id}", "load", str(self._load()))
                await self._guard(p.execute())
        except ClusterUnavailable:
            self._synced = False

    async def call_ended(self, call_id: str, client: str, reason: str) -> None:
        self._info.pop(call_id, None)
        try:
            async with self.redis.pipeline(transaction=True) as p:
                key = P + f"call:{call_id}"
                p.hset(key, mapping={"state": "ended", "reason": reason,
                                     "ended_at": str(time.time())})
                p.expire(key, int(self.ended_keep_s))
                p.srem(P + f"ncalls:{self.node_id}", call_id)
                p.hincrby(P + "ended_reasons", reason, 1)
                p.hset(P + f"node:{self.node_id}", "load", str(self._load()))
                await self._guard(p.execute())
        except ClusterUnavailable:
            self._pending_ends[call_id] = (client, reason)
            self._synced = False

    async def announce(self) -> None:
        try:
            await self._guard(self.redis.hset(P + f"node:{self.node_id}",
                                              mapping=self._node_fields()))
        except ClusterUnavailable:
            pass

    async def nodes(self) -> list[dict[str, Any]]:
        return [{"node": n.node_id, "url": n.url, "capacity": n.capacity, "load": n.load,
                 "draining": n.draining} for n in await self.node_views()]

    async def node_views(self) -> list[NodeView]:
        r = self.redis
        ids = sorted(await self._guard(r.smembers(P + "nodes")))
        if not ids:
            return []
        async with r.pipeline(transaction=False) as p:
            for n in ids:
                p.exists(P + f"alive:{n}")
                p.hgetall(P + f"node:{n}")
            raw = await self._guard(p.execute())
        views = []
        for n, alive, fields in zip(ids, raw[::2], raw[1::2], strict=True):
            if alive and fields.get("url"):
                views.append(NodeView(n, fields["url"], int(fields.get("capacity", 0)),
                                      int(fields.get("load", 0)), fields.get("draining") == "1"))
        return views

    async def list_calls(self) -> list[dict[str, Any]]:
        r = self.redis
        nodes = await self.node_views()
        async with r.pipeline(transaction=False) as p:
            for node in nodes:
                p.smembers(P + f"ncalls:{node.node_id}")
            sets = await self._guard(p.execute())
        ids = sorted({i for s in sets for i in s})
        async with r.pipeline(transaction=False) as p:
            for i in ids:
                p.hgetall(P + f"call:{i}")
            entries = await self._guard(p.execute())
        return [e for e in entries if e and e.get("state") == "active"]

    async def call_record(self, call_id: str) -> dict[str, Any] | None:
        entry = await self._guard(self.redis.hgetall(P + f"call:{call_id}"))
        return dict(entry) if entry else None

    async def hangup(self, call_id: str) -> bool:
        entry = await self.call_record(call_id)
        if not entry or entry.get("state") != "active":
            return False
        receivers = await self._guard(self.redis.publish(P + f"cmd:{entry['node']}", call_id))
        return bool(receivers)

    async def pick_node(self) -> str | None:
        candidates = [n for n in await self.node_views()
                      if n.node_id != self.node_id and n.free > 0]
        if not candidates:
            return None
        return max(candidates, key=lambda n: (n.free, n.node_id)).url

    async def cluster_metrics(self) -> list[str]:
        """The Prometheus text of every live node (this one's included)."""
        nodes = await self.node_views()
        if not nodes:
            return []
        texts = await self._guard(self.redis.mget([P + f"metrics:{n.node_id}" for n in nodes]))
        return [t for t in texts if t]

    # ---- forwarded offers --------------------------------------------------------------------

    def sign_forward(self, remote: str) -> str:
        """`X-Callbot-Forwarded` value: the caller's address, a time and an HMAC of both."""
        stamp = str(int(time.time()))
        return f"{remote};{stamp};{self._mac(remote, stamp)}"

    def verify_forward(self, value: str, max_age_s: float = 30.0) -> str | None:
        """The caller's address from a forwarded offer's header, if a node signed it."""
        parts = value.split(";")
        if len(parts) != 3 or self.forward_key is None:
            return None
        remote, stamp, mac = parts
        try:
            fresh = abs(time.time() - int(stamp)) <= max_age_s
        except ValueError:
            return None
        if fresh and hmac.compare_digest(self._mac(remote, stamp), mac):
            return remote
        return None

    def _mac(self, remote: str, stamp: str) -> str:
        assert self.forward_key is not None  # callers check it
        return hmac.new(self.forward_key, f"{remote};{stamp}".encode(),
                        hashlib.sha256).hexdigest()[:32]

    # ---- single-use tickets (Realtime client secrets) ----------------------------------------

    async def put_ticket(self, client: str, key: str, value: str, ttl_s: float,
                         limits: TicketLimits) -> None:
        rate = limits.per_minute / 60.0
        status, wait = await self._guard(self._ticket_put(args=[
            key, client, value, repr(time.time()), repr(float(ttl_s)), repr(rate),
            repr(max(1.0, limits.per_minute)), limits.per_client, limits.total]))
        if int(status) == 2:
            raise RateLimited("too many client secrets minted; slow down", float(wait))
        if int(status) == 3:
            raise limits.refusal()

    async def take_ticket(self, key: str) -> str | None:
        value = await self._guard(self._ticket_take(args=[key]))
        return str(value) if value else None


def merge_metrics(texts: list[str]) -> str:
    """Sum the samples of several nodes' Prometheus texts (counters, gauges, histograms)."""
    from prometheus_client.parser import text_string_to_metric_families

    order: list[str] = []
    meta: dict[str, tuple[str, str]] = {}
    sums: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            if family.name not in meta:
                order.append(family.name)
                meta[family.name] = (family.documentation, family.type)
                sums[family.name] = {}
            bucket = sums[family.name]
            for s in family.samples:
                if s.name.endswith("_created"):  # creation times do not add up
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                bucket[key] = bucket.get(key, 0.0) + s.value
    lines: list[str] = []
    for name in order:
        doc, kind = meta[name]
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        for (sample, labels), value in sums[name].items():
            label_text = ",".join(f'{k}="{json.dumps(v)[1:-1]}"' for k, v in labels)
            lines.append(f"{sample}{{{label_text}}} {value!r}" if label_text
                         else f"{sample} {value!r}")
    return "\n".join(lines) + "\n"
