"""The OpenAI Realtime protocol (WebRTC and WebSocket) on callbot's pipeline: any Realtime
client can call callbot with only its base URL changed."""

from callbot.signalling.protocols.openai_realtime.routes import setup

__all__ = ["setup"]
