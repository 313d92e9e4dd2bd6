"""What an offer may make the server do: bounded media sections and remote candidates, and no
connectivity checks to addresses the operator does not allow.

One unauthenticated offer must not make the server probe hundreds of internal addresses: the
offer's candidates are capped, and candidates outside the allowed networks are removed before
aiortc sees them (aioice sends checks only to the remote candidates it is given, and learns
peer-reflexive ones only from checks that reach it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import NegotiationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OfferRefused(NegotiationError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CandidatePolicy:
    """Which remote candidate addresses get connectivity checks: those in `networks` (None:
    any), and only global ones when `global_only` (a public deployment)."""

    networks: tuple[Network, ...] | None = None
    global_only: bool = False
    allow_mdns: bool = True  # `<uuid>.local` host candidates (resolved on the local link)

    @classmethod
    def for_deployment(cls, configured: Sequence[str] | None, local_addresses: Sequence[str],
                       public_ip: str | None) -> CandidatePolicy:
        """`configured` (CIDRs) wins. Otherwise a public deployment (an `ice_public_ip`, or a
        global local ICE address) allows global addresses only: no loopback, private,
        link-local or reserved ones; a loopback/private one allows all unicast addresses."""
        if configured is not None:
            return cls(tuple(ipaddress.ip_network(n, strict=False) for n in configured),
                       allow_mdns=False)
        public = public_ip is not None or any(
            ipaddress.ip_address(a).is_global for a in local_addresses)
        if public:
            return cls(global_only=True, allow_mdns=False)
        return cls()

    def allows(self, host: str) -> bool:
        if host.lower().endswith(".local"):
            return self.allow_mdns
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # a DNS name: never resolved on a stranger's behalf
        if address.is_multicast or address.is_unspecified:
            return False
        if self.global_only and not address.is_global:
            return False
        return self.networks is None or any(
            address in n for n in self.networks if n.version == address.version)


def local_ice_addresses() -> list[str]:
    """The local addresses aioice would offer as host candidates (no ice_hosts setting)."""
    import aioice.ice

    return list(aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True))


def guard_offer(sdp: str, *, max_m_lines: int, max_candidates: int,
                policy: CandidatePolicy) -> str:
    """The offer with disallowed candidates removed; OfferRefused past the caps."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    media = sum(1 for line in lines if line.startswith("m="))
    if media > max_m_lines:
        raise OfferRefused("too_many_media",
                           f"the offer has {media} media sections; at most {max_m_lines}")
    unique: set[tuple[str, ...]] = set()
    out: list[str] = []
    for line in lines:
        if line.startswith("a=candidate:"):
            parts = line[len("a=candidate:"):].split()
            if len(parts) < 8:
                continue  # malformed: aiortc would refuse the whole offer for it
            unique.add((parts[2].lower(), parts[4].lower(), parts[5]))
            if len(unique) > max_candidates:
                raise OfferRefused("too_many_candidates",
                                   f"the offer has more than {max_candidates} ICE candidates")
            if not policy.allows(parts[4]):
                continue
        out.append(line)
    return newline.join(out)
