"""A micro service written in Python, for plain (threaded) programs: the asyncio
:class:`micro.aio.Service` run on an event loop of its own, in a background thread."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .aio.service import Service as AsyncService
from .records import Endpoint, MessageType, ServiceRecord

__all__ = ["Service"]

F = TypeVar("F", bound=Callable[..., Any])


class Service:
    """A service whose endpoints are Python functions, callable by any micro client.
    Takes the same arguments as :class:`micro.aio.Service`::

        svc = micro.Service("pyworker")

        @svc.handle("Worker.Run")
        def run(req):
            return {"done": req["job"]}

        svc.run()  # until Ctrl-C or SIGTERM; deregisters on the way out

    Handlers run on a pool of worker threads, so they may block. ``start()`` and
    ``stop()`` (or a ``with`` block) serve in the background instead of ``run()``.
    """

    def __init__(self, name: str, **options: Any):
        self._service = AsyncService(name, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The registered name."""
        return self._service.name

    @property
    def version(self) -> str:
        """The registered version."""
        return self._service.version

    @property
    def node_id(self) -> str:
        """The id of this instance's node in the registry."""
        return self._service.node_id

    @property
    def address(self) -> str | None:
        """The address registered for callers (``host:port``), once started."""
        return self._service.address

    @property
    def endpoints(self) -> list[Endpoint]:
        """The endpoints served, as registered."""
        return self._service.endpoints

    def record(self) -> ServiceRecord:
        """The registry record of this instance."""
        return self._service.record()

    def handle(
        self,
        endpoint: str,
        *,
        stream: str | None = None,
        request: MessageType | None = None,
        response: MessageType | None = None,
    ) -> Callable[[F], F]:
        """A decorator that serves ``endpoint`` with the function; see
        :meth:`micro.aio.Service.handle`."""
        return self._service.handle(endpoint, stream=stream, request=request, response=response)

    def add_handler(self, endpoint: str, fn: Callable[..., Any], **options: Any) -> None:
        """Serves ``endpoint`` with ``fn`` (as :meth:`handle`, without decorating)."""
        self._service.add_handler(endpoint, fn, **options)

    def start(self) -> None:
        """Starts serving in the background: listens, registers through the proxy,
        heart-beats. Raises :class:`micro.Error` if it cannot register."""
        if self._thread is not None:
            raise RuntimeError("the service is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=f"micro-service-{self.name}", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._service.start(), loop).result()
        except BaseException:
            _end_loop(loop, thread)
            raise
        self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Deregisters, finishes the calls in flight (up to ``drain_timeout``) and
        stops. Safe to call more than once."""
        if self._loop is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._service.stop(), self._loop).result()
        finally:
            _end_loop(self._loop, self._thread)
            self._loop = self._thread = None

    def run(self) -> None:
        """Starts, serves until SIGINT (Ctrl-C) or SIGTERM, then stops gracefully
        (deregistering first). Signals are caught only when called from the main
        thread; elsewhere it serves until :meth:`stop` is called."""
        stopped = threading.Event()
        previous = {}
        # Caught before the service registers: once others can see it, a signal
        # must stop it gracefully, not interrupt the start half way.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: stopped.set())
        try:
            self.start()
            # Wakes up now and then: signal handlers run only between waits.
            while not stopped.wait(0.2) and self._thread is not None:
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()

    def __enter__(self) -> Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _end_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
