"""micro's one error shape, ``{"id", "code", "detail", "status"}``, as Python exceptions.

Every failure of this library is a :class:`Error` (or a subclass chosen by its code),
whether it came from a service, from the proxy, or from the connection to it.
"""

from __future__ import annotations

import http
import json
from typing import Any, ClassVar

import grpc

__all__ = [
    "Error",
    "BadRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "Timeout",
    "Conflict",
    "TooManyRequests",
    "Cancelled",
    "InternalError",
    "Unavailable",
    "from_rpc_error",
]

#: The id of errors this library makes itself (as the Rust client's ``micro.client``).
CLIENT_ID = "micro.client"


def reason(code: int) -> str:
    """The reason phrase of an HTTP status code ("Not Found")."""
    if code == 499:
        return "Client Closed Request"
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


class Error(Exception):
    """A micro error: who raised it (``id``), an HTTP status ``code`` (400-599), a
    readable ``detail`` and the code's reason phrase (``status``).

    Raise it from a handler of a :class:`micro.Service` to answer with that code::

        raise micro.Error("no such job", code=404)

    Errors received from the proxy are instances of the subclass that matches their
    code (:class:`NotFound` for 404, :class:`Timeout` for 408, …), so both
    ``except micro.NotFound`` and ``except micro.Error as e: e.code == 404`` work.
    """

    #: The code of errors made by this class without an explicit code.
    default_code: ClassVar[int] = 500

    def __init__(self, detail: str = "", code: int | None = None, id: str = "", status: str | None = None):
        code = self.default_code if code is None else int(code)
        if not 400 <= code <= 599:
            code = 500  # as everywhere in micro: anything else is an internal error
        self.id = id
        self.code = code
        self.detail = detail
        self.status = status or reason(code)
        super().__init__(detail)

    def __str__(self) -> str:
        who = f"{self.id}: " if self.id else ""
        return f"{who}{self.detail} ({self.code} {self.status})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(detail={self.detail!r}, code={self.code}, id={self.id!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Error):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = Exception.__hash__

    def to_dict(self) -> dict[str, Any]:
        """The error as its JSON object."""
        return {"id": self.id, "code": self.code, "detail": self.detail, "status": self.status}

    def to_json(self) -> str:
        """The error's JSON text, as sent on the wire."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @staticmethod
    def from_dict(obj: dict[str, Any]) -> Error:
        """The error of a parsed error JSON object, as the subclass of its code."""
        code = obj.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else 500
        cls = _BY_CODE.get(code, Error)
        return cls(
            detail=str(obj.get("detail", "")),
            code=code,
            id=str(obj.get("id", "")),
            status=obj.get("status") or None,
        )

    @staticmethod
    def parse(text: str | bytes) -> Error | None:
        """The error in ``text`` when it is micro's error JSON, else None."""
        try:
            obj = json.loads(text)
        except (ValueError, TypeError):
            return None
        if not isinstance(obj, dict) or "code" not in obj or "detail" not in obj:
            return None
        return Error.from_dict(obj)


class BadRequest(Error):
    """400: the request is malformed or invalid."""

    default_code = 400


class Unauthorized(Error):
    """401: no or bad credentials."""

    default_code = 401


class Forbidden(Error):
    """403: not allowed."""

    default_code = 403


class NotFound(Error):
    """404: no such service, endpoint, config path, …"""

    default_code = 404


class Timeout(Error):
    """408 (or 504): the deadline ran out before the answer came."""

    default_code = 408


class Conflict(Error):
    """409: the resource already exists or changed."""

    default_code = 409


class TooManyRequests(Error):
    """429: over a limit (rate, size)."""

    default_code = 429


class Cancelled(Error):
    """499: the call was cancelled by its caller."""

    default_code = 499


class InternalError(Error):
    """500: the server failed."""

    default_code = 500


class Unavailable(Error):
    """503: the proxy or the service could not be reached."""

    default_code = 503


_BY_CODE: dict[int, type[Error]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: Timeout,
    409: Conflict,
    429: TooManyRequests,
    499: Cancelled,
    500: InternalError,
    503: Unavailable,
    504: Timeout,
}

# gRPC status -> HTTP code, for answers without `micro-error` (docs/wire.md).
_GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 408,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def from_rpc_error(err: grpc.RpcError) -> Error:
    """The micro error of a failed gRPC call: the ``micro-error`` trailer when it
    holds one, else the gRPC status mapped to its HTTP code, with id ``micro.client``."""
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "micro-error":
            parsed = Error.parse(value)
            if parsed is not None:
                return parsed
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    detail = err.details() if hasattr(err, "details") else None
    http_code = _GRPC_TO_HTTP.get(code, 500)
    if not detail:
        detail = code.name.lower().replace("_", " ") if code else "unknown error"
    return Error.from_dict({"id": CLIENT_ID, "code": http_code, "detail": detail})
