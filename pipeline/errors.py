"""Errors of the speech pipeline: one base class, so an app can catch the layer's failures."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class SettingsError(PipelineError, ValueError):
    """A pipeline setting is out of range; the message names it."""


class EngineError(PipelineError, RuntimeError):
    """A model engine failed; the message is safe to show to the caller."""


class LLMError(EngineError):
    """The language model or its server failed."""


class LLMTimeout(EngineError):
    """The reply took longer than `ReplySettings.timeout_s`."""


class RemoteEngineError(EngineError):
    """An engine on an inference server failed: unreachable, timed out, or answered an error."""
