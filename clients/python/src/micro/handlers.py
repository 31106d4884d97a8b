"""Python functions as micro endpoints: how a request on the wire becomes a call of
a handler, and its result (or exception) the answer.

What a micro client sends to an ``http-json`` node (docs/wire.md): ``POST /`` with
``Micro-Endpoint: Greeter.Hello`` (or ``POST /[package.]Service/Method``), the JSON
request (NDJSON lines for several messages), a ``Timeout`` header and the call's
metadata as headers. The answer is the JSON response (NDJSON lines for a stream) or
the shared error JSON with its HTTP status."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._http import HttpRequest, HttpResponse
from ._options import parse_duration
from .errors import Error
from .records import Endpoint, MessageType

__all__ = ["Context", "Handler", "Router", "current_context"]

log = logging.getLogger("micro")

# Headers that belong to the transport and are not the call's metadata (docs/wire.md).
_TRANSPORT_HEADERS = frozenset(
    "accept accept-encoding connection content-encoding content-length content-type expect "
    "grpc-accept-encoding grpc-encoding grpc-timeout host keep-alive micro-endpoint te timeout "
    "transfer-encoding upgrade".split()
)
_STREAM_KINDS = ("false", "server", "client", "bidi")
_JSON = {"content-type": "application/json"}
_NDJSON = {"content-type": "application/x-ndjson"}

_context: contextvars.ContextVar[Context] = contextvars.ContextVar("micro_context")


@dataclass
class Context:
    """What a handler may want to know about the request it serves. A handler gets
    it as its second parameter if it takes two, or from :func:`current_context`."""

    #: The service name.
    service: str
    #: The endpoint called, ``Service.Method``.
    endpoint: str
    #: The call's metadata: its headers (lower-case names) less the transport ones.
    metadata: dict[str, str] = field(default_factory=dict)
    #: When the caller stops waiting, on the ``time.monotonic()`` clock; None: never.
    deadline: float | None = None

    @property
    def from_service(self) -> str | None:
        """The calling service's name (``Micro-From-Service``), if it said."""
        return self.metadata.get("micro-from-service")

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (never negative), or None without one. Pass it
        as the ``timeout`` of calls the handler makes, so they end in time too."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


def current_context() -> Context:
    """The :class:`Context` of the request the calling handler serves (also inside
    sync handlers, which run on a worker thread). Raises LookupError outside one."""
    return _context.get()


@dataclass
class Handler:
    """One endpoint of a service: its name and the function that serves it."""

    name: str
    fn: Callable[..., Any]
    #: "false" (one request, one response), "server" (the function yields the
    #: responses), "client" / "bidi" (it gets an iterator of the requests).
    stream: str = "false"
    request: MessageType | None = None
    response: MessageType | None = None

    def __post_init__(self) -> None:
        if self.stream not in _STREAM_KINDS:
            raise ValueError(f"stream must be one of {_STREAM_KINDS}, got {self.stream!r}")
        params = [
            p
            for p in inspect.signature(self.fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        self._takes_context = len(params) >= 2

    def endpoint(self) -> Endpoint:
        """The endpoint as registered."""
        return Endpoint(self.name, self.request, self.response, {"stream": self.stream})


def _stream_kind(fn: Callable[..., Any], stream: str | None) -> str:
    if stream is not None:
        return stream
    generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
    return "server" if generator else "false"


class Router:
    """The endpoints of one service, and the dispatch of HTTP requests to them."""

    def __init__(self, service: str, executor: concurrent.futures.Executor | None = None):
        self.service = service
        self.version = "latest"
        self.handlers: dict[str, Handler] = {}
        #: Where plain (non-async) handlers run; set by the service when it starts.
        self._executor = executor
        self._started = time.time()
        self._requests = 0
        self._errors = 0

    def add(
        self,
        endpoint: str,
        fn: Callable[..., Any],
        stream: str | None = None,
        request: MessageType | None = None,
        response: MessageType | None = None,
    ) -> Handler:
        """Serves ``endpoint`` ("Service.Method") with ``fn``."""
        if endpoint.count(".") < 1 or " " in endpoint:
            raise ValueError(f"an endpoint is named Service.Method, got {endpoint!r}")
        if endpoint in self.handlers or endpoint.startswith("Debug."):
            raise ValueError(f"endpoint {endpoint} is already served")
        handler = Handler(endpoint, fn, _stream_kind(fn, stream), request, response)
        self.handlers[endpoint] = handler
        return handler

    async def dispatch(self, req: HttpRequest) -> HttpResponse:
        """Answers one HTTP request."""
        self._requests += 1
        try:
            return await self._dispatch(req)
        except Error as e:
            self._errors += 1
            return _error_response(e)
        except Exception:  # noqa: BLE001 (a bug here must still be answered)
            log.exception("dispatching %s failed", req.headers.get("micro-endpoint") or req.path)
            self._errors += 1
            return _error_response(Error("the request failed unexpectedly", 500, "micro.server"))

    async def _dispatch(self, req: HttpRequest) -> HttpResponse:
        if req.method != "POST":
            raise Error(f"method {req.method} is not allowed: use POST", 405, "micro.server")
        name = req.headers.get("micro-endpoint") or _endpoint_of_path(req.path)
        deadline = _deadline(req.headers.get("timeout"))
        if name in ("Debug.Health", "Debug.Stats"):
            return _json_response(self._debug(name))
        handler = self.handlers.get(name or "")
        if handler is None:
            served = ", ".join(sorted(self.handlers)) or "none"
            raise Error(f"{self.service} has no endpoint {name!r} (serves: {served})", 404, self.service)
        ctx = Context(
            self.service,
            handler.name,
            {k: v for k, v in req.headers.items() if k not in _TRANSPORT_HEADERS},
            deadline,
        )
        messages = _decode(req.body, several=handler.stream in ("client", "bidi"))
        arg: Any = iter(messages) if handler.stream in ("client", "bidi") else messages[0]
        args = (arg, ctx) if handler._takes_context else (arg,)
        if handler.stream in ("server", "bidi"):
            return await self._stream(handler, ctx, args)
        result = await self._invoke(handler, ctx, args)
        return _json_response(result, handler.name)

    async def _invoke(self, handler: Handler, ctx: Context, args: tuple[Any, ...]) -> Any:
        """Calls a handler within the request's deadline: coroutine functions on the
        event loop, plain functions on a worker thread (so they may block);
        generator functions are only called (their body runs as they are read)."""
        fn = handler.fn
        token = _context.set(ctx)
        try:
            if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
                return await self._guard(handler, ctx, _ready(fn, args))
            if inspect.iscoroutinefunction(fn):
                return await self._guard(handler, ctx, fn(*args))
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self._executor, contextvars.copy_context().run, fn, *args)
            return await self._guard(handler, ctx, work)
        finally:
            _context.reset(token)

    async def _stream(self, handler: Handler, ctx: Context, args: tuple[Any, ...]) -> HttpResponse:
        """Runs a streaming handler. Its first message (or error) is awaited before
        the answer starts, so an error up front gets its own HTTP status; a later one
        ends the stream with an ``{"error": {…}}`` line (what micro clients read)."""
        made = await self._invoke(handler, ctx, args)
        try:
            items = _aiter(made, self._executor, ctx)
        except TypeError:
            raise Error(f"{handler.name} is a stream but did not return an iterator", 500, self.service) from None
        first = await self._next(handler, ctx, items)
        if first is _END:
            return HttpResponse(200, dict(_NDJSON), b"")

        async def lines() -> AsyncIterator[bytes]:
            item = first
            try:
                while item is not _END:
                    yield _dumps(item, handler.name) + b"\n"
                    item = await self._next(handler, ctx, items)
            except Error as e:
                self._errors += 1
                yield json.dumps({"error": e.to_dict()}, separators=(",", ":")).encode() + b"\n"
            finally:
                aclose = getattr(items, "aclose", None)
                if aclose is not None:
                    await aclose()

        return HttpResponse(200, dict(_NDJSON), stream=lines())

    async def _next(self, handler: Handler, ctx: Context, items: Any) -> Any:
        """The next message of a stream, or _END."""

        async def step() -> Any:
            try:
                return await items.__anext__()
            except StopAsyncIteration:
                return _END

        token = _context.set(ctx)
        try:
            return await self._guard(handler, ctx, step())
        finally:
            _context.reset(token)

    async def _guard(self, handler: Handler, ctx: Context, work: Awaitable[Any]) -> Any:
        """Awaits a handler's work until the deadline, turning what it raises into
        the error to answer."""
        try:
            return await asyncio.wait_for(work, ctx.time_remaining())
        except asyncio.TimeoutError:
            raise Error(f"{handler.name} did not finish before the deadline", 408, self.service) from None
        except Error as e:
            raise _own(e, self.service) from None
        except Exception:  # noqa: BLE001 (any failure of user code is a 500)
            log.exception("%s failed", handler.name)
            raise Error(f"{handler.name} failed unexpectedly", 500, self.service) from None

    def _debug(self, name: str) -> dict[str, Any]:
        if name == "Debug.Health":
            return {"status": "ok"}
        # As micro's StatsResponse: uint64 fields are strings in JSON.
        return {
            "started": str(int(self._started)),
            "uptime": str(int(time.time() - self._started)),
            "requests": str(self._requests),
            "errors": str(self._errors),
            "service": self.service,
            "version": self.version,
        }


_END = object()


async def _ready(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Calls a generator function (which only makes the generator) as an awaitable,
    so that a wrong signature fails like any handler error."""
    return fn(*args)


def _aiter(made: Any, executor: concurrent.futures.Executor | None, ctx: Context) -> Any:
    """The messages of a streaming handler's result as an async iterator; a sync
    iterator is advanced on a worker thread."""
    if hasattr(made, "__anext__"):
        return made
    if not hasattr(made, "__next__"):
        made = iter(made)
    return _ThreadedIterator(made, executor, ctx)


class _ThreadedIterator:
    def __init__(self, it: Iterator[Any], executor: concurrent.futures.Executor | None, ctx: Context):
        self._it = it
        self._executor = executor
        self._ctx = ctx

    def __aiter__(self) -> _ThreadedIterator:
        return self

    async def __anext__(self) -> Any:
        def step() -> Any:
            token = _context.set(self._ctx)
            try:
                return next(self._it, _END)
            finally:
                _context.reset(token)

        item = await asyncio.get_running_loop().run_in_executor(self._executor, step)
        if item is _END:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        close = getattr(self._it, "close", None)
        if close is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        except Exception:  # noqa: BLE001 (e.g. still running past its deadline: it ends on its own)
            log.debug("closing the stream of %s failed", self._ctx.endpoint, exc_info=True)


def _own(e: Error, service: str) -> Error:
    """A handler's error, said to come from this service unless it names another."""
    if not e.id:
        e.id = service
    return e


def _endpoint_of_path(path: str) -> str | None:
    """``/pkg.Worker/Run`` or ``/Worker/Run`` -> ``Worker.Run``."""
    parts = path.split("?", 1)[0].strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return f"{parts[0].rsplit('.', 1)[-1]}.{parts[1]}"


def _deadline(header: str | None) -> float | None:
    if not header:
        return None
    try:
        return time.monotonic() + parse_duration(header)
    except ValueError:
        detail = f"malformed Timeout header {header!r}: expected seconds (30) or a duration such as 500ms, 2s or 1m"
        raise Error(detail, 400, "micro.server") from None


def _decode(body: bytes, several: bool) -> list[Any]:
    """The request message(s) of a body: one JSON value (empty: ``{}``), or for
    client streams NDJSON lines."""
    try:
        text = body.decode("utf-8")
        if not several:
            return [json.loads(text) if text.strip() else {}]
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Error(f"the request is not valid JSON: {e}", 400, "micro.codec") from None


def _dumps(obj: Any, endpoint: str) -> bytes:
    try:
        return json.dumps({} if obj is None else obj, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise Error(f"{endpoint} answered something that is not JSON: {e}", 500, "micro.codec") from None


def _json_response(obj: Any, endpoint: str = "") -> HttpResponse:
    return HttpResponse(200, dict(_JSON), _dumps(obj, endpoint))


def _error_response(e: Error) -> HttpResponse:
    return HttpResponse(e.code, dict(_JSON), e.to_json().encode())
