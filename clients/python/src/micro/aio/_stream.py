"""A server stream of the proxy's API as an async iterator that raises micro errors
and can be cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import grpc

from ..errors import Timeout, from_rpc_error

T = TypeVar("T")


class Stream(Generic[T]):
    """An async iterator over the messages of a server stream (call answers,
    registry events, config changes). Iterating raises :class:`micro.Error` when the
    stream fails. ``cancel()`` (or leaving an ``async with`` block, or cancelling the
    task that reads it) cancels the RPC; iteration then ends."""

    def __init__(self, call: grpc.aio.UnaryStreamCall, decode: Callable[[Any], T]):
        self._call = call
        self._decode = decode
        self._closed = False

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            item = await self._call.read()
        except grpc.aio.AioRpcError as e:
            if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise from_rpc_error(e) from None
        except asyncio.CancelledError:
            if self._closed:
                raise StopAsyncIteration from None
            self._call.cancel()  # the reading task was cancelled: so is the RPC
            raise
        if item is grpc.aio.EOF:
            raise StopAsyncIteration
        return self._decode(item)

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Waits until the proxy has answered the stream's head (it serves the
        stream), or raises the error the stream failed with."""
        try:
            await asyncio.wait_for(self._call.initial_metadata(), timeout)
        except asyncio.TimeoutError:
            raise Timeout("the stream did not start in time", id="micro.client") from None
        if self._call.done():
            code = await self._call.code()
            if code != grpc.StatusCode.OK:
                try:
                    await self._call.read()
                except grpc.aio.AioRpcError as e:
                    raise from_rpc_error(e) from None

    def cancel(self) -> None:
        """Cancels the stream."""
        self._closed = True
        self._call.cancel()

    async def aclose(self) -> None:
        """Cancels the stream (as :meth:`cancel`)."""
        self.cancel()

    async def __aenter__(self) -> Stream[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()
