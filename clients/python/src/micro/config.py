"""The config store of ``micro server`` (``micro.v1.Config``), synchronous."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from ._proto import config_pb2, config_pb2_grpc
from ._stream import Stream
from ._values import from_value, to_value
from .errors import NotFound, from_rpc_error
from .records import ConfigChange

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Config", "MISSING"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: The default of :meth:`Config.get`: raise NotFound for a path that is not set.
MISSING: Any = _Missing()


class Config:
    """Config values of ``micro server``, as ``client.config``. Paths are
    dot-separated keys into one JSON tree (``greeter.greeting``); ``""`` is the
    whole tree. Values are any JSON value."""

    def __init__(self, channel: grpc.Channel, client: Client):
        self._stub = config_pb2_grpc.ConfigStub(channel)
        self._client = client

    def get(self, path: str = "", default: Any = MISSING, *, timeout: float | None = None) -> Any:
        """The value at ``path`` (a dict for a path with keys under it). A path that
        is not set returns ``default`` if given, else raises :class:`~micro.NotFound`."""
        try:
            rsp = self._unary(self._stub.Read, config_pb2.ReadRequest(path=path), timeout)
        except NotFound:
            if default is MISSING:
                raise
            return default
        return from_value(rsp.value) if rsp.HasField("value") else None

    def set(self, path: str, value: Any, *, timeout: float | None = None) -> None:
        """Sets ``path`` to ``value`` (creating the tables above it); returns once it
        is durably stored."""
        req = config_pb2.WriteRequest(path=path, value=to_value(value))
        self._unary(self._stub.Write, req, timeout)

    def delete(self, path: str, *, timeout: float | None = None) -> None:
        """Deletes ``path`` and everything under it (a path not set is no error)."""
        self._unary(self._stub.Delete, config_pb2.DeleteRequest(path=path), timeout)

    def list(self, path: str = "", *, timeout: float | None = None) -> dict[str, Any]:
        """The leaf values under ``path``, by full path, in path order."""
        rsp = self._unary(self._stub.List, config_pb2.ListRequest(path=path), timeout)
        return {e.path: from_value(e.value) for e in rsp.entries}

    def watch(self, path: str = "") -> Stream[ConfigChange]:
        """An iterator of :class:`~micro.ConfigChange` for ``path``: its current value
        first, then every change (``deleted`` when it is removed). Close it to stop."""
        call = self._stub.Watch(config_pb2.WatchConfigRequest(path=path), metadata=self._client._headers)
        return Stream(call, ConfigChange.from_proto)

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._client._timeout(timeout), metadata=self._client._headers)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
