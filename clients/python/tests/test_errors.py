"""The error shape and its mapping from gRPC (no processes needed)."""

from __future__ import annotations

import grpc
import pytest

import micro
from micro.errors import from_rpc_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple = ()):
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple:
        return self._trailers


def test_the_micro_error_trailer_wins() -> None:
    trailer = ("micro-error", '{"id":"greeter","code":413,"detail":"too big","status":"Payload Too Large"}')
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big", (trailer,)))
    assert type(err) is micro.Error
    assert err.to_dict() == {"id": "greeter", "code": 413, "detail": "too big", "status": "Payload Too Large"}


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, 408, micro.Timeout),
        (grpc.StatusCode.NOT_FOUND, 404, micro.NotFound),
        (grpc.StatusCode.UNAVAILABLE, 503, micro.Unavailable),
        (grpc.StatusCode.INVALID_ARGUMENT, 400, micro.BadRequest),
        (grpc.StatusCode.CANCELLED, 499, micro.Cancelled),
        (grpc.StatusCode.UNAUTHENTICATED, 401, micro.Unauthorized),
        (grpc.StatusCode.PERMISSION_DENIED, 403, micro.Forbidden),
        (grpc.StatusCode.ALREADY_EXISTS, 409, micro.Conflict),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429, micro.TooManyRequests),
        (grpc.StatusCode.FAILED_PRECONDITION, 412, micro.Error),
        (grpc.StatusCode.UNIMPLEMENTED, 501, micro.Error),
        (grpc.StatusCode.INTERNAL, 500, micro.InternalError),
        (grpc.StatusCode.UNKNOWN, 500, micro.InternalError),
    ],
)
def test_without_the_trailer_the_status_is_mapped(status: grpc.StatusCode, code: int, cls: type) -> None:
    err = from_rpc_error(FakeRpcError(status, "why"))
    assert type(err) is cls
    assert (err.id, err.code, err.detail) == ("micro.client", code, "why")


def test_a_malformed_trailer_falls_back_to_the_status() -> None:
    err = from_rpc_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "gone", (("micro-error", "not json"),)))
    assert (type(err), err.code, err.detail) == (micro.NotFound, 404, "gone")


def test_constructing_errors() -> None:
    e = micro.Error("no such job", code=404)
    assert (e.code, e.status, e.id, str(e)) == (404, "Not Found", "", "no such job (404 Not Found)")
    assert micro.NotFound("x").code == 404
    assert (
        micro.Timeout("late", id="svc").to_json()
        == '{"id":"svc","code":408,"detail":"late","status":"Request Timeout"}'
    )
    assert micro.Error("odd", code=200).code == 500  # only 4xx and 5xx are errors
    assert micro.Error.parse('{"id":"a","code":503,"detail":"d","status":"Service Unavailable"}') == micro.Unavailable(
        "d", id="a"
    )
    assert micro.Error.parse("[1]") is None
    assert isinstance(micro.NotFound("x"), micro.Error)
