"""The call record over HTTP (signalling/records/).

    GET    /v1/calls/{call_id}/transcript          -> {"call_id", "turns": [...], ...}
    GET    /v1/calls/{call_id}/transcript?format=vtt -> WebVTT
    GET    /v1/calls/{call_id}/recording.wav       -> stereo WAV (caller left, bot right)
    DELETE /v1/calls/{call_id}/record              -> 204: transcript and recording erased

While the call runs, and after it if `record.keep` (or `record.audio`). The same credentials
as `GET/DELETE /v1/calls/{id}`: the call's owner (the token that started it, the browser's
spent call token included) or an admin; anyone else gets 404, as if there were no such call.
"""

from __future__ import annotations

from aiohttp import web

from callbot.signalling.errors import ApiError
from callbot.signalling.records.service import Found, RecordService
from callbot.signalling.records.transcript import to_vtt
from callbot.signalling.server.state import STATE

record_routes = web.RouteTableDef()


async def _found(request: web.Request) -> tuple[RecordService, Found]:
    state = request.app[STATE]
    principal = state.auth.authenticate(request, purpose="manage")
    call_id = request.match_info["call_id"]
    records = state.records
    found = await records.find(call_id) if records is not None else None
    if records is None or found is None or not principal.owns(found.owner):
        raise ApiError(404, "record_not_found", "no record of a call with that id")
    return records, found


@record_routes.get("/v1/calls/{call_id}/transcript")
async def get_transcript(request: web.Request) -> web.Response:
    _, found = await _found(request)
    kind = request.query.get("format", "json")
    if kind == "vtt":
        return web.Response(text=to_vtt(found.transcript), content_type="text/vtt")
    if kind != "json":
        raise ApiError(400, "bad_format", "format: 'json' or 'vtt'")
    return web.json_response(found.transcript)


@record_routes.get("/v1/calls/{call_id}/recording.wav")
async def get_recording(request: web.Request) -> web.StreamResponse:
    _, found = await _found(request)
    path = found.recording
    if path is None or not path.is_file():
        raise ApiError(404, "recording_not_found",
                       "this call was not recorded (record.audio is off) or it was erased")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav",
                                           "Cache-Control": "no-store"})


@record_routes.delete("/v1/calls/{call_id}/record")
async def delete_record(request: web.Request) -> web.Response:
    records, _ = await _found(request)
    await records.delete(request.match_info["call_id"])
    return web.Response(status=204)
