"""Which ICE servers and local addresses a peer connection uses.

aiortc falls back to Google's STUN server when no ICE server is configured, and aioice never
offers 127.0.0.1 as a host candidate. Both are wrong for us: we always pass an explicit list,
and `restrict_host_addresses` fixes which local addresses become host candidates (loopback
for tests and load tests, one public interface on a server).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer

from .errors import MediaSettingsConflict

_original_get_host_addresses = aioice.ice.get_host_addresses
_allowed_hosts: tuple[str, ...] | None = None


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def turn_rest_credentials(urls: Sequence[str], shared_secret: str, *, ttl_s: float,
                          user: str, now: float | None = None) -> IceServer:
    """Short-lived TURN credentials in the TURN REST convention (coturn's
    `use-auth-secret` / `static-auth-secret`): the username is "<expiry unix time>:<user>",
    the password base64(HMAC-SHA1(secret, username)). The TURN server checks both without
    asking anyone; they stop working at the expiry."""
    expiry = int((time.time() if now is None else now) + ttl_s)
    username = f"{expiry}:{user}"
    mac = hmac.new(shared_secret.encode(), username.encode(), hashlib.sha1).digest()
    return IceServer(urls=tuple(urls), username=username,
                     credential=base64.b64encode(mac).decode())


def ice_server_json(server: IceServer) -> dict[str, object]:
    """An `RTCIceServer` dictionary as a browser takes it."""
    out: dict[str, object] = {"urls": list(server.urls)}
    if server.username is not None:
        out["username"] = server.username
    if server.credential is not None:
        out["credential"] = server.credential
    return out


def rtc_configuration(servers: Sequence[IceServer] = ()) -> RTCConfiguration:
    return RTCConfiguration(
        iceServers=[
            RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
            for s in servers
        ]
    )


def restrict_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer exactly these local addresses as host candidates (None: aioice's own choice).

    aioice reads the addresses through a module function, so this is process-wide.
    """
    global _allowed_hosts
    if addresses is None:
        _allowed_hosts = None
        aioice.ice.get_host_addresses = _original_get_host_addresses
        return
    for address in addresses:
        ipaddress.ip_address(address)  # ValueError names the bad address
    _allowed_hosts = tuple(addresses)
    aioice.ice.get_host_addresses = _allowed_host_addresses


_claims: dict[int, tuple[str, ...]] = {}
_next_claim = 0


def claim_host_addresses(addresses: Sequence[str]) -> int:
    """Restrict host candidates for an app in this process; returns the claim to release.

    The setting is process-wide, so a second app asking for other addresses while the first
    runs is refused (`MediaSettingsConflict`) instead of silently changing the first's calls.
    """
    global _next_claim
    wanted = tuple(addresses)
    held = set(_claims.values())
    if held and held != {wanted}:
        raise MediaSettingsConflict(
            f"ice_hosts {list(wanted)} conflicts with {list(held.pop())}, which another callbot "
            "app in this process uses: ICE host addresses are process-wide, so every app "
            "mounted in one process must use the same ice_hosts")
    restrict_host_addresses(wanted)
    _next_claim += 1
    _claims[_next_claim] = wanted
    return _next_claim


def release_host_addresses(claim: int) -> None:
    """Give a claim back; with none left, aioice chooses host addresses again."""
    if _claims.pop(claim, None) is not None and not _claims:
        restrict_host_addresses(None)


def _allowed_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    hosts = _allowed_hosts or ()
    return [
        a for a in hosts if (use_ipv6 if ipaddress.ip_address(a).version == 6 else use_ipv4)
    ]


def announce_public_ip(sdp: str, public_ip: str) -> str:
    """Rewrite the host candidates (and `c=` lines) of an SDP to `public_ip` (NAT 1:1).

    For a server behind a 1:1 NAT (a cloud VM with an elastic IP): its local address is not
    reachable, the public one is, with the same ports. Callers then send their connectivity
    checks to the public address; the NAT delivers them to the local socket.
    """
    ipaddress.ip_address(public_ip)  # ValueError names the bad address
    rewritten: set[str] = set()
    lines = sdp.split("\r\n") if "\r\n" in sdp else sdp.split("\n")
    out: list[str] = []
    for line in lines:
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            # a=candidate:<foundation> <component> <proto> <priority> <address> <port> typ host
            if len(parts) >= 8 and parts[6] == "typ" and parts[7] == "host":
                rewritten.add(parts[4])
                parts[4] = public_ip
                line = " ".join(parts)
        out.append(line)
    family = "IP6" if ipaddress.ip_address(public_ip).version == 6 else "IP4"
    for i, line in enumerate(out):
        if line.startswith("c=IN ") and line.split(" ")[-1] in rewritten:
            out[i] = f"c=IN {family} {public_ip}"
    return ("\r\n" if "\r\n" in sdp else "\n").join(out)
