"""Discovery through the proxy (``micro.v1.Registry``), synchronous."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from ._proto import registry_pb2, registry_pb2_grpc
from ._stream import Stream
from .errors import from_rpc_error
from .records import ServiceEvent, ServiceRecord

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Registry"]

#: How long a registration lives unless renewed, when not said (as micro's default).
DEFAULT_TTL = 90


class Registry:
    """The registry of ``micro server``, as ``client.registry``."""

    def __init__(self, channel: grpc.Channel, client: Client):
        self._stub = registry_pb2_grpc.RegistryStub(channel)
        self._client = client

    def list_services(self, *, timeout: float | None = None) -> list[ServiceRecord]:
        """Every registered service: one :class:`~micro.ServiceRecord` per name and
        version, with its nodes."""
        rsp = self._unary(self._stub.ListServices, registry_pb2.ListServicesRequest(), timeout)
        return [ServiceRecord.from_proto(s) for s in rsp.services]

    def get_service(
        self, name: str, version: str | None = None, *, timeout: float | None = None
    ) -> list[ServiceRecord]:
        """The records of service ``name`` (one per version, or only ``version``),
        with endpoints and nodes. Raises :class:`~micro.NotFound` for an unknown
        service."""
        req = registry_pb2.GetServiceRequest(service=name, version=version or "")
        rsp = self._unary(self._stub.GetService, req, timeout)
        return [ServiceRecord.from_proto(s) for s in rsp.services]

    def register(self, service: ServiceRecord, ttl: float = DEFAULT_TTL, *, timeout: float | None = None) -> None:
        """Registers (or renews) the nodes of ``service`` for ``ttl`` seconds; call
        again before it runs out to stay registered."""
        req = registry_pb2.RegisterRequest(service=service.to_proto(), ttl_seconds=max(1, round(ttl)))
        self._unary(self._stub.Register, req, timeout)

    def deregister(self, service: ServiceRecord, *, timeout: float | None = None) -> None:
        """Removes the nodes of ``service`` (by name, version and node ids) at once."""
        req = registry_pb2.DeregisterRequest(service=service.to_proto())
        self._unary(self._stub.Deregister, req, timeout)

    def watch(self, service: str | None = None) -> Stream[ServiceEvent]:
        """An iterator of :class:`~micro.ServiceEvent` for one service, or all: the
        current state first (as ``create`` events), then every change. Close it to
        stop watching."""
        req = registry_pb2.WatchServicesRequest(service=service or "")
        call = self._stub.Watch(req, metadata=self._client._headers)
        return Stream(call, ServiceEvent.from_proto)

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=self._client._timeout(timeout), metadata=self._client._headers)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
