"""A server stream of the proxy's API as a Python iterator that raises micro errors
and can be closed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from .errors import Timeout, from_rpc_error

T = TypeVar("T")


class Stream(Generic[T]):
    """An iterator over the messages of a server stream (call answers, registry
    events, config changes). Iterating raises :class:`micro.Error` when the stream
    fails. ``close()`` (or leaving a ``with`` block) cancels it; iteration then ends.
    """

    def __init__(self, call: Any, decode: Callable[[Any], T]):
        self._call = call
        self._decode = decode
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        try:
            item = next(self._call)
        except grpc.RpcError as e:
            if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise from_rpc_error(e) from None
        return self._decode(item)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Blocks until the proxy has answered the stream's head (it has started
        serving it), or raises the error the stream failed with."""
        ready = _wait_head(self._call, timeout)
        if not ready:
            raise Timeout("the stream did not start in time", id="micro.client")
        if self._call.done() and self._call.code() != grpc.StatusCode.OK:
            raise from_rpc_error(self._call) from None

    def close(self) -> None:
        """Cancels the stream."""
        self._closed = True
        self._call.cancel()

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait_head(call: Any, timeout: float | None) -> bool:
    """Waits for the response headers (initial metadata) of a gRPC call (grpcio's
    wait has no timeout: it waits on a helper thread)."""
    done = threading.Event()

    def wait() -> None:
        try:
            call.initial_metadata()
        finally:
            done.set()

    threading.Thread(target=wait, daemon=True).start()
    return done.wait(timeout)
