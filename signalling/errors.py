"""JSON error responses: every failure a client sees is `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger(__name__)


class SignallingError(Exception):
    """Base of every error the signalling layer raises on purpose."""


class ApiError(SignallingError):
    """Refuse a request: becomes `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status,
                             headers=headers)


_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.headers)
        if exc.status in (408, 413):  # the rest of the body may never come: do not wait for it
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep the exception's own headers: a 405 must say which methods are allowed (Allow).
        kept = {k: v for k, v in exc.headers.items()
                if k.lower() not in ("content-type", "content-length")}
        return error_response(exc.status, _CODES.get(exc.status, "http_error"), exc.reason,
                              kept or None)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal server error")
