"""callbot: talk to an AI over a live WebRTC call.

The embedding surface, in one place:

    from aiohttp import web
    import callbot

    app = web.Application()
    callbot.mount(app, "/callbot", callbot.CallbotConfig(), hooks=callbot.CallHooks(
        on_call_started=lambda call: call.say("Hello!")))

Layers (each its own package): `callbot.signalling` (HTTP, auth, registry, protocols),
`callbot.rtc` (peer connections, tracks, pacing), `callbot.pipeline` (VAD, ASR, LLM, TTS,
turn-taking), `callbot.loadtest` (synthetic callers, apart from the server).

Names load on first use, so `import callbot.pipeline` alone does not pull in aiortc/aiohttp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# name -> module that defines it
_EXPORTS = {
    "create_app": "callbot.signalling.app",
    "mount": "callbot.signalling.app",
    "CallbotConfig": "callbot.signalling.config",
    "AuthSettings": "callbot.signalling.config",
    "Limits": "callbot.signalling.config",
    "Engines": "callbot.pipeline.engines",
    "TurnSettings": "callbot.pipeline.settings",
    "ConfigError": "callbot.signalling.config",
    "CallHooks": "callbot.signalling.calls.hooks",
    "CallHandle": "callbot.signalling.calls.handle",
    "CallOptions": "callbot.signalling.calls.call",
    "ApiError": "callbot.signalling.errors",
    "mint_call_token": "callbot.signalling.server.auth",
    "IceServer": "callbot.rtc.ice",
    "Tool": "callbot.pipeline.llm.tools",
    "events": "callbot.pipeline.events",
    "KnowledgeSettings": "callbot.signalling.config",
    "MemorySettings": "callbot.signalling.config",
    "KnowledgeBase": "callbot.pipeline.knowledge",
    "KnowledgeSource": "callbot.pipeline.knowledge",
    "Passage": "callbot.pipeline.knowledge",
    "CallerMemory": "callbot.pipeline.memory",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:
    from callbot.pipeline import events as events
    from callbot.pipeline.engines import Engines as Engines
    from callbot.pipeline.knowledge import KnowledgeBase as KnowledgeBase
    from callbot.pipeline.knowledge import KnowledgeSource as KnowledgeSource
    from callbot.pipeline.knowledge import Passage as Passage
    from callbot.pipeline.llm.tools import Tool as Tool
    from callbot.pipeline.memory import CallerMemory as CallerMemory
    from callbot.pipeline.settings import TurnSettings as TurnSettings
    from callbot.rtc.ice import IceServer as IceServer
    from callbot.signalling.app import create_app as create_app
    from callbot.signalling.app import mount as mount
    from callbot.signalling.calls.call import CallOptions as CallOptions
    from callbot.signalling.calls.handle import CallHandle as CallHandle
    from callbot.signalling.calls.hooks import CallHooks as CallHooks
    from callbot.signalling.config import AuthSettings as AuthSettings
    from callbot.signalling.config import CallbotConfig as CallbotConfig
    from callbot.signalling.config import ConfigError as ConfigError
    from callbot.signalling.config import KnowledgeSettings as KnowledgeSettings
    from callbot.signalling.config import Limits as Limits
    from callbot.signalling.config import MemorySettings as MemorySettings
    from callbot.signalling.errors import ApiError as ApiError
    from callbot.signalling.server.auth import mint_call_token as mint_call_token


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'callbot' has no attribute {name!r}")
    loaded = importlib.import_module(module)
    value = loaded if name == "events" else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
