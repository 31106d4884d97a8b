"""A micro service written in Python, for asyncio: handlers served as JSON over
HTTP/1.1, its node registered through the proxy with a TTL and renewed on a
heart-beat, deregistered when it stops."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .._http import HttpServer
from .._options import env_duration
from ..errors import Error
from ..handlers import Router
from ..records import Endpoint, MessageType, Node, ServiceRecord
from .client import Client

__all__ = ["Service"]

log = logging.getLogger("micro")

F = TypeVar("F", bound=Callable[..., Any])

#: The node metadata ``protocol`` of a node that speaks only JSON over HTTP.
HTTP_JSON = "http-json"
DEFAULT_MAX_BODY = 4 * 1024 * 1024


class Service:
    """A service whose endpoints are Python functions, callable by any micro client
    (Rust services, ``micro call``, the proxy, this library).

    ``name`` is the registered name; ``version`` defaults to ``MICRO_SERVER_VERSION``
    or ``latest``. It listens on ``address`` (``host:port``; default
    ``MICRO_SERVER_ADDRESS``, else ``127.0.0.1:0``: loopback, any free port) and is
    registered as ``advertise`` (default ``MICRO_SERVER_ADVERTISE``, else the bound
    address; loopback when bound to every interface) through the proxy at ``proxy``
    (default ``MICRO_PROXY``, else ``localhost:8081``). The registration lives
    ``ttl`` seconds (``MICRO_REGISTER_TTL``, default 90) and is renewed every
    ``interval`` seconds (``MICRO_REGISTER_INTERVAL``, default 30). ``metadata`` is
    the service's metadata (also ``MICRO_SERVER_METADATA=k=v,…``).

    Handlers take the request (a JSON value) and optionally a
    :class:`~micro.Context`; they return the JSON response. A generator (sync or
    async) is a server stream. Plain functions run on a pool of ``workers`` threads;
    ``async def`` ones on the event loop. Raise :class:`micro.Error` to answer with
    an error; any other exception is a 500::

        svc = micro.aio.Service("pyworker")

        @svc.handle("Worker.Run")
        async def run(req):
            return {"done": req["job"]}

        asyncio.run(svc.run())
    """

    def __init__(
        self,
        name: str,
        *,
        version: str | None = None,
        address: str | None = None,
        advertise: str | None = None,
        proxy: str | None = None,
        metadata: Mapping[str, str] | None = None,
        ttl: float | None = None,
        interval: float | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        drain_timeout: float = 10.0,
        workers: int = 16,
    ):
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"a service name is a word without spaces, got {name!r}")
        self.name = name
        self.version = version or os.environ.get("MICRO_SERVER_VERSION") or "latest"
        self.metadata = {**_env_metadata(), **(metadata or {})}
        self.ttl = ttl if ttl is not None else env_duration("MICRO_REGISTER_TTL", 90.0)
        self.interval = interval if interval is not None else env_duration("MICRO_REGISTER_INTERVAL", 30.0)
        #: The id of this instance's node in the registry.
        self.node_id = f"{name}-{uuid.uuid4()}"
        #: The address registered for callers (``host:port``), once started.
        self.address: str | None = None
        self._bind = address or os.environ.get("MICRO_SERVER_ADDRESS") or "127.0.0.1:0"
        self._advertise = advertise or os.environ.get("MICRO_SERVER_ADVERTISE") or None
        self._proxy = proxy
        self._max_body = max_body
        self._drain_timeout = drain_timeout
        self._workers = workers
        self._router = Router(name)
        self._router.version = self.version
        self._http: HttpServer | None = None
        self._client: Client | None = None
        self._heartbeat: asyncio.Task[None] | None = None

    # -- handlers ----------------------------------------------------------------

    def handle(
        self,
        endpoint: str,
        *,
        stream: str | None = None,
        request: MessageType | None = None,
        response: MessageType | None = None,
    ) -> Callable[[F], F]:
        """A decorator that serves ``endpoint`` (``"Worker.Run"``) with the function.
        ``stream`` is found from the function (a generator: ``"server"``) unless
        given (``"client"`` and ``"bidi"`` handlers get an iterator of requests);
        ``request`` / ``response`` describe the messages in the registry."""

        def register(fn: F) -> F:
            self.add_handler(endpoint, fn, stream=stream, request=request, response=response)
            return fn

        return register

    def add_handler(
        self,
        endpoint: str,
        fn: Callable[..., Any],
        *,
        stream: str | None = None,
        request: MessageType | None = None,
        response: MessageType | None = None,
    ) -> None:
        """Serves ``endpoint`` with ``fn`` (as :meth:`handle`, without decorating)."""
        if self._http is not None:
            raise RuntimeError("add handlers before the service starts (they are registered then)")
        self._router.add(endpoint, fn, stream, request, response)

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints served, as registered."""
        return [h.endpoint() for h in self._router.handlers.values()]

    def record(self) -> ServiceRecord:
        """The registry record of this instance."""
        node = Node(self.node_id, self.address or "", {"protocol": HTTP_JSON, "server": "micro-python"})
        return ServiceRecord(self.name, self.version, dict(self.metadata), self.endpoints, [node])

    # -- lifetime ----------------------------------------------------------------

    async def start(self) -> None:
        """Listens, registers the node through the proxy, and starts the heart-beat.
        Raises :class:`micro.Error` if the proxy cannot register it."""
        if self._http is not None:
            raise RuntimeError("the service is already started")
        self._router._executor = concurrent.futures.ThreadPoolExecutor(
            self._workers, thread_name_prefix=f"micro-{self.name}"
        )
        host, port = _split_address(self._bind)
        self._http = HttpServer(self._router.dispatch, max_body=self._max_body)
        _, bound_port = await self._http.start(host, port)
        self.address = self._advertise or _advertised(host, bound_port)
        self._client = Client(self._proxy)
        try:
            await self._client.registry.register(self.record(), self.ttl, timeout=10)
        except BaseException:
            await self._close()
            raise
        self._heartbeat = asyncio.create_task(self._renew(), name=f"micro-register-{self.name}")
        log.info(
            "%s serving %s on %s (node %s)", self.name, ", ".join(self._router.handlers), self.address, self.node_id
        )

    async def stop(self) -> None:
        """Deregisters, stops accepting calls, lets calls in flight finish (up to
        ``drain_timeout`` seconds) and closes."""
        if self._http is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        if self._client is not None:
            try:
                await self._client.registry.deregister(self.record(), timeout=5)
            except Error as e:
                log.warning("deregistering %s failed: %s", self.node_id, e)
        await self._close()

    async def run(self) -> None:
        """Starts, serves until SIGINT or SIGTERM (or until the task running it is
        cancelled), then stops gracefully."""
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = []
        # Caught before the service registers, as in the blocking Service.run.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stopped.set)
                signals.append(sig)
        try:
            await self.start()
            await stopped.wait()
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            await self.stop()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _renew(self) -> None:
        """Registers again every interval, so the registration never expires while
        the service runs; a failure is logged and tried again next time."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                assert self._client is not None
                await self._client.registry.register(self.record(), self.ttl, timeout=10)
            except Error as e:
                log.warning("renewing the registration of %s failed: %s", self.node_id, e)

    async def _close(self) -> None:
        if self._http is not None:
            await self._http.stop(self._drain_timeout)
            self._http = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._router._executor is not None:
            self._router._executor.shutdown(wait=False, cancel_futures=True)


def _split_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:0``, ``:8080``) -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def _advertised(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # as micro's Rust services: loopback unless told otherwise
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _env_metadata() -> dict[str, str]:
    """``MICRO_SERVER_METADATA=k=v,k2=v2``."""
    pairs = (p.split("=", 1) for p in os.environ.get("MICRO_SERVER_METADATA", "").split(",") if "=" in p)
    return {k.strip(): v.strip() for k, v in pairs}
