"""The proxy API's request messages, built the same way by the sync and asyncio
clients (only their I/O differs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._proto import broker_pb2, client_pb2
from ._values import to_value

# The gRPC deadline is a little later than the timeout the proxy is given, so that
# the proxy's own 408 (which names the service) usually arrives first.
_DEADLINE_MARGIN = 0.25


def grpc_deadline(timeout: float | None) -> float | None:
    """The gRPC timeout (seconds) of a call that may take ``timeout`` seconds."""
    return None if timeout is None else timeout + _DEADLINE_MARGIN


def call_request(
    service: str,
    endpoint: str,
    request: Any,
    timeout: float | None,
    metadata: Mapping[str, str] | None,
    version: str | None,
    address: str | None,
) -> client_pb2.CallRequest:
    """A ``CallRequest`` with the request as JSON (None means ``{}``)."""
    pb = client_pb2.CallRequest(
        service=service,
        endpoint=endpoint,
        metadata={k.lower(): str(v) for k, v in (metadata or {}).items()},
        version=version or "",
        address=address or "",
    )
    if timeout is not None:
        if timeout <= 0:
            from .errors import BadRequest

            raise BadRequest(f"timeout must be positive, got {timeout}", id="micro.client")
        pb.timeout_ms = max(1, int(timeout * 1000))
    pb.request.CopyFrom(to_value({} if request is None else request))
    return pb


def publish_request(
    topic: str,
    message: Any,
    headers: Mapping[str, str] | None,
    content_type: str | None,
) -> broker_pb2.PublishRequest:
    """A ``PublishRequest``: bytes go as a raw body with ``content_type``, anything
    else as a JSON message."""
    pb = broker_pb2.PublishRequest(
        topic=topic,
        headers={k.lower(): str(v) for k, v in (headers or {}).items()},
    )
    if isinstance(message, (bytes, bytearray, memoryview)):
        pb.body = bytes(message)
        pb.content_type = content_type or "application/octet-stream"
    else:
        pb.message.CopyFrom(to_value(message))
    return pb
