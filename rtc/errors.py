"""Errors of the media layer: one base class for everything `rtc/` raises on purpose."""

from __future__ import annotations


class RtcError(Exception):
    """Base of the media layer's errors."""


class NegotiationError(RtcError, ValueError):
    """An offer the peer connection cannot use (the message says why)."""


class MediaSettingsConflict(RtcError):
    """Two apps in one process asked for different process-wide media settings."""
