"""The config store of ``micro server`` (``micro.v1.Config``), asyncio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from .._proto import config_pb2, config_pb2_grpc
from .._values import from_value, to_value
from ..config import MISSING
from ..errors import NotFound, from_rpc_error
from ..records import ConfigChange
from ._stream import Stream

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Config"]


class Config:
    """Config values of ``micro server``, as ``client.config`` (asyncio); the same
    methods as :class:`micro.config.Config`, awaited."""

    def __init__(self, client: Client):
        self._client = client
        self._cached: Any = None

    @property
    def _stub(self) -> config_pb2_grpc.ConfigStub:
        if self._cached is None:
            self._cached = config_pb2_grpc.ConfigStub(self._client._get_channel())
        return self._cached

    async def get(self, path: str = "", default: Any = MISSING, *, timeout: float | None = None) -> Any:
        """The value at ``path``; ``default`` (if given) when it is not set, else
        :class:`~micro.NotFound`."""
        try:
            rsp = await self._unary(self._stub.Read, config_pb2.ReadRequest(path=path), timeout)
        except NotFound:
            if default is MISSING:
                raise
            return default
        return from_value(rsp.value) if rsp.HasField("value") else None

    async def set(self, path: str, value: Any, *, timeout: float | None = None) -> None:
        """Sets ``path`` to ``value``; returns once it is durably stored."""
        await self._unary(self._stub.Write, config_pb2.WriteRequest(path=path, value=to_value(value)), timeout)

    async def delete(self, path: str, *, timeout: float | None = None) -> None:
        """Deletes ``path`` and everything under it (a path not set is no error)."""
        await self._unary(self._stub.Delete, config_pb2.DeleteRequest(path=path), timeout)

    async def list(self, path: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """The leaf values under ``path``, by full path, in path order."""
        rsp = await self._unary(self._stub.List, config_pb2.ListRequest(path=path), timeout)
        return {e.path: from_value(e.value) for e in rsp.entries}

    def watch(self, path: str = "") -> Stream[ConfigChange]:
        """An async iterator of :class:`~micro.ConfigChange`: the current value of
        ``path`` first, then every change."""
        call = self._stub.Watch(config_pb2.WatchConfigRequest(path=path), metadata=self._client._headers)
        return Stream(call, ConfigChange.from_proto)

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._client._timeout(timeout), metadata=self._client._headers)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
