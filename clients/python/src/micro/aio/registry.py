"""Discovery through the proxy (``micro.v1.Registry``), asyncio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from .._proto import registry_pb2, registry_pb2_grpc
from ..errors import from_rpc_error
from ..records import ServiceEvent, ServiceRecord
from ..registry import DEFAULT_TTL
from ._stream import Stream

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Registry"]


class Registry:
    """The registry of ``micro server``, as ``client.registry`` (asyncio); the same
    methods as :class:`micro.registry.Registry`, awaited."""

    def __init__(self, client: Client):
        self._client = client
        self._cached: Any = None

    @property
    def _stub(self) -> registry_pb2_grpc.RegistryStub:
        if self._cached is None:
            self._cached = registry_pb2_grpc.RegistryStub(self._client._get_channel())
        return self._cached

    async def list_services(self, *, timeout: float | None = None) -> list[ServiceRecord]:
        """Every registered service: one record per name and version, with its nodes."""
        rsp = await self._unary(self._stub.ListServices, registry_pb2.ListServicesRequest(), timeout)
        return [ServiceRecord.from_proto(s) for s in rsp.services]

    async def get_service(
        self, name: str, version: str | None = None, *, timeout: float | None = None
    ) -> list[ServiceRecord]:
        """The records of service ``name`` (one per version, or only ``version``).
        Raises :class:`~micro.NotFound` for an unknown service."""
        req = registry_pb2.GetServiceRequest(service=name, version=version or "")
        rsp = await self._unary(self._stub.GetService, req, timeout)
        return [ServiceRecord.from_proto(s) for s in rsp.services]

    async def register(self, service: ServiceRecord, ttl: float = DEFAULT_TTL, *, timeout: float | None = None) -> None:
        """Registers (or renews) the nodes of ``service`` for ``ttl`` seconds."""
        req = registry_pb2.RegisterRequest(service=service.to_proto(), ttl_seconds=max(1, round(ttl)))
        await self._unary(self._stub.Register, req, timeout)

    async def deregister(self, service: ServiceRecord, *, timeout: float | None = None) -> None:
        """Removes the nodes of ``service`` (by name, version and node ids) at once."""
        await self._unary(self._stub.Deregister, registry_pb2.DeregisterRequest(service=service.to_proto()), timeout)

    def watch(self, service: str | None = None) -> Stream[ServiceEvent]:
        """An async iterator of :class:`~micro.ServiceEvent` for one service, or all:
        the current state first (``create`` events), then every change."""
        req = registry_pb2.WatchServicesRequest(service=service or "")
        return Stream(self._stub.Watch(req, metadata=self._client._headers), ServiceEvent.from_proto)

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._client._timeout(timeout), metadata=self._client._headers)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
