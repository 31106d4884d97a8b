"""The asyncio client of ``micro server``'s proxy (grpc.aio): the same API as
:class:`micro.Client`, with ``await``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

from .. import _requests
from .._options import proxy_address
from .._proto import broker_pb2, broker_pb2_grpc, client_pb2_grpc
from .._values import from_value
from ..errors import from_rpc_error
from ..records import Message
from ._stream import Stream
from .broker import Subscription
from .config import Config
from .registry import Registry

__all__ = ["Client"]


class Client:
    """A connection to a micro proxy, for asyncio code.

    ``address`` is ``host:port``; without it ``MICRO_PROXY`` is used, else
    ``localhost:8081``. ``timeout`` is the default of every request in seconds;
    ``headers`` go to the proxy with every request. The gRPC channel is opened on
    first use, in the running event loop; ``await close()`` it or use
    ``async with``::

        async with micro.aio.Client() as client:
            print(await client.call("greeter", "Greeter.Hello", {"name": "John"}))

    Cancelling a task that awaits a method cancels the RPC.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.address = proxy_address(address)
        self.timeout = timeout
        self._headers = [(k.lower(), v) for k, v in (headers or {}).items()]
        self._channel: grpc.aio.Channel | None = None
        self._client: client_pb2_grpc.ClientStub | None = None
        self._broker: broker_pb2_grpc.BrokerStub | None = None
        #: Discovery: list, look up, register and watch services.
        self.registry = Registry(self)
        #: The config store of ``micro server``: get, set, delete, list, watch.
        self.config = Config(self)

    def _get_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
            self._client = client_pb2_grpc.ClientStub(self._channel)
            self._broker = broker_pb2_grpc.BrokerStub(self._channel)
        return self._channel

    async def call(
        self,
        service: str,
        endpoint: str,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        version: str | None = None,
        address: str | None = None,
    ) -> Any:
        """Calls ``endpoint`` of ``service`` with the JSON value ``request`` and
        returns the decoded response; see :meth:`micro.Client.call`."""
        timeout = self.timeout if timeout is None else timeout
        req = _requests.call_request(service, endpoint, request, timeout, metadata, version, address)
        self._get_channel()
        assert self._client is not None
        try:
            rsp = await self._client.Call(req, timeout=_requests.grpc_deadline(timeout), metadata=self._headers)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return from_value(rsp.response) if rsp.HasField("response") else None

    def stream(
        self,
        service: str,
        endpoint: str,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, str] | None = None,
        version: str | None = None,
        address: str | None = None,
    ) -> Stream[Any]:
        """Calls a server-streaming endpoint; returns an async iterator of its
        decoded responses. See :meth:`micro.Client.stream`."""
        timeout = self.timeout if timeout is None else timeout
        req = _requests.call_request(service, endpoint, request, timeout, metadata, version, address)
        self._get_channel()
        assert self._client is not None
        call = self._client.Stream(req, timeout=_requests.grpc_deadline(timeout), metadata=self._headers)
        return Stream(call, lambda rsp: from_value(rsp.response) if rsp.HasField("response") else None)

    async def publish(
        self,
        topic: str,
        message: Any,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publishes ``message`` on ``topic``; returns its id. See
        :meth:`micro.Client.publish`."""
        req = _requests.publish_request(topic, message, headers, content_type)
        self._get_channel()
        assert self._broker is not None
        try:
            rsp = await self._broker.Publish(req, timeout=self._timeout(timeout), metadata=self._headers)
        except grpc.aio.AioRpcError as e:
            raise from_rpc_error(e) from None
        return rsp.id

    async def subscribe(
        self,
        topic: str,
        handler: Callable[[Message], Any],
        *,
        queue: str | None = None,
        ready_timeout: float | None = 10.0,
    ) -> Subscription:
        """Calls ``handler(message)`` (a plain or ``async`` function) with every
        message published on ``topic`` until the returned
        :class:`~micro.aio.Subscription` is stopped; with ``queue``, messages are
        shared by the subscribers of that queue group. Returns once the proxy has
        subscribed; raises :class:`micro.Error` if it cannot."""
        request = broker_pb2.SubscribeRequest(topic=topic, queue=queue or "")

        def open_stream() -> Stream[Message]:
            self._get_channel()
            assert self._broker is not None
            return Stream(self._broker.Subscribe(request, metadata=self._headers), Message.from_proto)

        return await Subscription.start(topic, queue, open_stream, handler, ready_timeout)

    async def close(self) -> None:
        """Closes the connection; streams and subscriptions of this client end."""
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"micro.aio.Client({self.address!r})"

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout
