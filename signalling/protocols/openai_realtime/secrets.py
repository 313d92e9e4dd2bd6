"""Client secrets (`ek_...`): short-lived, single-use keys a backend mints for one browser,
as the reference API does (browser Realtime clients refuse any other key on WebRTC)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL_S = 600
MAX_TTL_S = 7200
MAX_LIVE = 10_000  # secrets kept at once; the oldest expire first


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: float
    client_id: str  # who minted it: its calls count against that client's limits
    session: dict[str, Any]  # the session config it starts calls with


class ClientSecretStore:
    def __init__(self) -> None:
        self._live: dict[str, ClientSecret] = {}

    def mint(self, client_id: str, session: dict[str, Any], ttl_s: float = DEFAULT_TTL_S
             ) -> ClientSecret:
        self._prune()
        while len(self._live) >= MAX_LIVE:
            self._live.pop(next(iter(self._live)))
        secret = ClientSecret(value=f"ek_{secrets.token_hex(24)}",
                              expires_at=time.time() + ttl_s, client_id=client_id,
                              session=session)
        self._live[secret.value] = secret
        return secret

    def use(self, value: str) -> ClientSecret | None:
        """The secret, once: a second use, an unknown or an expired key gives None."""
        secret = self._live.pop(value, None)
        if secret is None or secret.expires_at <= time.time():
            return None
        return secret

    def _prune(self) -> None:
        now = time.time()
        for value in [v for v, s in self._live.items() if s.expires_at <= now]:
            del self._live[value]

    def __len__(self) -> int:
        return len(self._live)
