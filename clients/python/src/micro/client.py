"""The synchronous client of ``micro server``'s proxy: call services, stream,
publish and subscribe; ``client.registry`` and ``client.config`` for the rest."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc

from . import _requests
from ._options import proxy_address
from ._proto import broker_pb2, broker_pb2_grpc, client_pb2_grpc
from ._stream import Stream
from ._values import from_value
from .broker import Subscription
from .config import Config
from .errors import from_rpc_error
from .records import Message
from .registry import Registry

__all__ = ["Client"]


class Client:
    """A connection to a micro proxy (``micro server``, port 8081).

    ``address`` is ``host:port``; without it ``MICRO_PROXY`` is used, else
    ``localhost:8081``. ``timeout`` (seconds) is the default of every request
    (None: the proxy's default of 5 s for calls, no limit otherwise).
    ``headers`` are sent to the proxy with every request (e.g. an
    ``authorization`` token for the proxy's ``auth`` wrapper).

    The connection is opened lazily and shared by all methods; ``close()`` it, or
    use the client as a context manager::

        with micro.Client() as client:
            print(client.call("greeter", "Greeter.Hello", {"name": "John"}))
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
        self._channel = grpc.insecure_channel(self.address)
        self._client = client_pb2_grpc.ClientStub(self._channel)
        self._broker = broker_pb2_grpc.BrokerStub(self._channel)
        #: Discovery: list, look up, register and watch services.
        self.registry = Registry(self._channel, self)
        #: The config store of ``micro server``: get, set, delete, list, watch.
        self.config = Config(self._channel, self)

    # -- calls -----------------------------------------------------------------

    def call(
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
        """Calls ``endpoint`` ("Greeter.Hello") of ``service`` ("greeter") with the
        JSON value ``request`` (None: ``{}``) and returns the decoded response.

        ``timeout`` (seconds) bounds the whole call, retries included; it becomes the
        gRPC deadline and the proxy's timeout. ``metadata`` reaches the service as
        headers. ``version`` picks nodes of one version; ``address`` one node.

        Raises :class:`micro.Error`: the service's own error unchanged,
        :class:`~micro.NotFound` for an unknown service or endpoint,
        :class:`~micro.Timeout` when the time runs out, :class:`~micro.Unavailable`
        when the proxy cannot be reached.
        """
        timeout = self.timeout if timeout is None else timeout
        req = _requests.call_request(service, endpoint, request, timeout, metadata, version, address)
        try:
            rsp = self._client.Call(req, timeout=_requests.grpc_deadline(timeout), metadata=self._headers)
        except grpc.RpcError as e:
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
        """Calls a server-streaming endpoint; returns an iterator of its decoded
        responses (close it to cancel the call). Arguments and errors as
        :meth:`call`; ``timeout`` bounds the whole stream."""
        timeout = self.timeout if timeout is None else timeout
        req = _requests.call_request(service, endpoint, request, timeout, metadata, version, address)
        call = self._client.Stream(req, timeout=_requests.grpc_deadline(timeout), metadata=self._headers)
        return Stream(call, lambda rsp: from_value(rsp.response) if rsp.HasField("response") else None)

    # -- pub/sub -----------------------------------------------------------------

    def publish(
        self,
        topic: str,
        message: Any,
        *,
        headers: Mapping[str, str] | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publishes ``message`` on ``topic`` and returns its id. A JSON value is sent
        as ``application/json``; ``bytes`` as they are, with ``content_type``
        (default ``application/octet-stream``). ``headers`` travel with it."""
        req = _requests.publish_request(topic, message, headers, content_type)
        try:
            rsp = self._broker.Publish(req, timeout=self._timeout(timeout), metadata=self._headers)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        return rsp.id

    def subscribe(
        self,
        topic: str,
        handler: Callable[[Message], Any],
        *,
        queue: str | None = None,
        ready_timeout: float | None = 10.0,
    ) -> Subscription:
        """Calls ``handler(message)`` with every :class:`~micro.Message` published on
        ``topic``, on a background thread, until the returned
        :class:`~micro.Subscription` is stopped. With ``queue``, each message goes to
        one subscriber of that queue group instead of to all.

        Returns once the proxy has opened the subscription (so a message published
        after it returns is received); raises :class:`micro.Error` if it cannot
        (a bad topic is :class:`~micro.BadRequest`)."""
        request = broker_pb2.SubscribeRequest(topic=topic, queue=queue or "")

        def open_stream() -> Stream[Message]:
            call = self._broker.Subscribe(request, metadata=self._headers)
            return Stream(call, Message.from_proto)

        return Subscription.start(topic, queue, open_stream, handler, ready_timeout)

    # -- lifetime ----------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; streams and subscriptions of this client end."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"micro.Client({self.address!r})"

    def _timeout(self, timeout: float | None) -> float | None:
        """The gRPC timeout of a control-plane request."""
        return self.timeout if timeout is None else timeout
