"""`GET /v1/openapi.json`: the call API described as OpenAPI 3.1 (hand-written)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from callbot.pipeline.events import CLIENT_MESSAGES, SERVER_EVENTS, json_schema

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
            for c in codes}


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "callbot", "version": "1",
             "description": "Start voice calls with an AI over WebRTC: POST an SDP offer, get "
                            "the answer. Events flow on the 'events' data channel."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "a static token or a signed call token"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
            "Offer": {"type": "object", "required": ["type", "sdp"], "properties": {
                "type": {"const": "offer"},
                "sdp": {"type": "string", "description": "SDP with an audio m-line"},
                "options": {"type": "object", "additionalProperties": False, "properties": {
                    "system_prompt": {"type": "string"},
                    "voice": {"type": "string"},
                    "language": {"type": "string"}}}}},
            "Answer": {"type": "object", "required": ["call_id", "sdp", "type"], "properties": {
                "call_id": {"type": "string"}, "sdp": {"type": "string"},
                "type": {"const": "answer"}, "max_call_s": {"type": "number"},
                "idle_timeout_s": {"type": "number"}}},
            # The 'events' data channel: JSON text messages, one object each.
            "ServerEvent": {"description": "server -> client on the 'events' data channel",
                            "oneOf": [json_schema(cls) for cls in SERVER_EVENTS]},
            "ClientMessage": {"description": "client -> server on the 'events' data channel",
                              "oneOf": [json_schema(cls) for cls in CLIENT_MESSAGES]},
        },
    },
    "paths": {
        "/v1/calls": {
            "post": {
                "summary": "Start a call",
                "security": [{}, {"bearer": []}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Offer"}}}},
                "responses": {"201": {"description": "the call, with the SDP answer",
                                      "content": {"application/json": {
                                          "schema": {"$ref": "#/components/schemas/Answer"}}}},
                              **_errors(400, 401, 403, 413, 415, 429, 503, 504)},
            },
            "get": {"summary": "Active calls", "security": [{}, {"bearer": []}],
                    "responses": {"200": {"description": "{calls: [...]}"}, **_errors(401)}},
        },
        "/v1/calls/{call_id}": {
            "delete": {
                "summary": "Hang up (on any node of a cluster)",
                "parameters": [{"name": "call_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"204": {"description": "hung up"}, **_errors(404, 503, 504)}},
            "get": {
                "summary": "One call, live or recently ended (state, reason, node)",
                "security": [{}, {"bearer": []}],
                "parameters": [{"name": "call_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the call"}, **_errors(401, 404, 503)}}},
        "/v1/calls/{call_id}/transcript": {"get": {
            "summary": "The call's transcript, live or kept (record.keep): JSON or WebVTT",
            "security": [{}, {"bearer": []}],
            "parameters": [{"name": "call_id", "in": "path", "required": True,
                            "schema": {"type": "string"}},
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"enum": ["json", "vtt"]}}],
            "responses": {"200": {"description": "{call_id, turns: [{role, text, heard_text?, "
                                                 "start_ms, end_ms, ...}]}, or text/vtt",
                                  "content": {"application/json": {"schema": {
                                      "type": "object", "required": ["call_id", "turns"]}},
                                      "text/vtt": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404)}}},
        "/v1/calls/{call_id}/recording.wav": {"get": {
            "summary": "The call's stereo recording (record.audio): caller left, bot right",
            "security": [{}, {"bearer": []}],
            "parameters": [{"name": "call_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "16 kHz 16-bit stereo WAV",
                                  "content": {"audio/wav": {}}},
                          **_errors(401, 404)}}},
        "/v1/calls/{call_id}/record": {"delete": {
            "summary": "Erase the call's transcript and recording",
            "security": [{}, {"bearer": []}],
            "parameters": [{"name": "call_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"204": {"description": "erased"}, **_errors(401, 404)}}},
        "/v1/cluster": {"get": {
            "summary": "The live workers/nodes sharing this one's state",
            "security": [{}, {"bearer": []}],
            "responses": {"200": {"description": "{node, nodes: [...]}"},
                          **_errors(401, 503)}}},
        "/v1/calls/{call_id}/hangup": {"post": {
            "summary": "Hang up (for navigator.sendBeacon, which can only POST)",
            "parameters": [{"name": "call_id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"204": {"description": "hung up"}, **_errors(403, 404, 503, 504)}}},
        "/v1/ice_servers": {"get": {
            "summary": "STUN/TURN servers (short-lived TURN credentials) and the ICE transport "
                       "policy for a browser's RTCPeerConnection; a call token is not spent",
            "security": [{}, {"bearer": []}],
            "responses": {"200": {"description": "{ice_servers: [{urls, username?, "
                                                 "credential?}], ice_transport_policy}"},
                          **_errors(401, 403)}}},
        "/healthz": {"get": {"summary": "Health", "responses": {"200": {"description": "ok"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition"}}}},
        "/v1/openapi.json": {"get": {"summary": "This document",
                                     "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    },
}


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)
