"""Client secrets (`ek_...`): short-lived, single-use keys a backend mints for one browser,
as the reference API does (browser Realtime clients refuse any other key on WebRTC).

They live in the app's shared store (`signalling/cluster/shared.py`): in this process alone,
or in Redis for `--workers N` and a cluster, so a secret minted on one worker or node is
honoured, once, by whichever one the browser reaches. The store keeps a SHA-256 digest of
the secret, never the secret. Minting is limited per credential (`limits`: a rate, a number
of unused secrets kept, which drops that credential's oldest, never another's) and in all.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from callbot.signalling.cluster.shared import SharedStore, TicketLimits

DEFAULT_TTL_S = 600
MAX_TTL_S = 7200
PREFIX = "ek_"


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: float
    client_id: str  # who minted it: its calls count against that client's limits
    session: dict[str, Any]  # the session config it starts calls with


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class ClientSecretStore:
    """Mints and redeems client secrets in `store` (a thin layer: nothing kept here)."""

    def __init__(self, store: SharedStore, limits: TicketLimits) -> None:
        self.store = store
        self.limits = limits

    async def mint(self, client_id: str, session: dict[str, Any],
                   ttl_s: float = DEFAULT_TTL_S) -> ClientSecret:
        """A new secret; raises `RateLimited` (429) past the limits, `ClusterUnavailable`
        when the shared store cannot be reached."""
        secret = ClientSecret(value=f"{PREFIX}{secrets.token_hex(24)}",
                              expires_at=time.time() + ttl_s, client_id=client_id,
                              session=session)
        record = json.dumps({"client_id": client_id, "expires_at": secret.expires_at,
                             "session": session}, separators=(",", ":"))
        await self.store.put_ticket(client_id.replace("\n", " "), _digest(secret.value),
                                    record, ttl_s, self.limits)
        return secret

    async def use(self, value: str) -> ClientSecret | None:
        """The secret, once: a second use, an unknown or an expired key gives None."""
        if not value.startswith(PREFIX) or len(value) > 200:
            return None
        stored = await self.store.take_ticket(_digest(value))
        if stored is None:
            return None
        record = json.loads(stored)
        if float(record["expires_at"]) <= time.time():
            return None
        return ClientSecret(value=value, expires_at=float(record["expires_at"]),
                            client_id=str(record["client_id"]), session=record["session"])
