"""A small HTTP/1.1 server on asyncio streams: what a service written with this
library listens with. It reads requests (Content-Length or chunked bodies,
``Expect: 100-continue``, keep-alive) and writes whole or chunked-streamed answers;
what a request means is up to the handler it is given."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from .errors import Error, reason

log = logging.getLogger("micro")

MAX_HEAD = 64 * 1024  # bytes of request line and headers
_HANGUP_CHECK = 0.1  # seconds between checks that the caller of a long request is still there


@dataclass
class HttpRequest:
    """One request: header names are lower-case, repeated headers joined with ``,``."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpResponse:
    """One answer: a whole ``body``, or a ``stream`` of chunks sent as they come."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class _BadRequest(Exception):
    def __init__(self, code: int, detail: str):
        super().__init__(detail)
        self.error = Error(detail, code=code, id="micro.server")


class HttpServer:
    """Serves ``handler`` on a TCP address until :meth:`stop`."""

    def __init__(self, handler: Handler, *, max_body: int, read_timeout: float = 30.0, idle_timeout: float = 60.0):
        self._handler = handler
        self._max_body = max_body
        self._read_timeout = read_timeout
        self._idle_timeout = idle_timeout
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._busy: set[asyncio.StreamWriter] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listens on ``host:port`` (port 0: any free one); returns the bound address."""
        self._server = await asyncio.start_server(self._connection, host, port, limit=MAX_HEAD)
        bound = self._server.sockets[0].getsockname()
        return bound[0], bound[1]

    async def stop(self, drain_timeout: float) -> None:
        """Stops accepting connections, lets requests in flight finish for up to
        ``drain_timeout`` seconds, then closes every connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers - self._busy):
            writer.close()  # idle keep-alive connections
        try:
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        except asyncio.TimeoutError:
            log.warning("%d request(s) still running after %ss; closing them", len(self._busy), drain_timeout)
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self._closing:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._idle_timeout)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    await self._write_error(writer, Error("request headers are too large", 431, "micro.server"))
                    return
                self._busy.add(writer)
                self._idle.clear()
                try:
                    if not await self._exchange(head, reader, writer):
                        return
                finally:
                    self._busy.discard(writer)
                    if not self._busy:
                        self._idle.set()
        except Exception:  # noqa: BLE001 (a broken connection must not stop the server)
            log.debug("connection failed", exc_info=True)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _exchange(self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads one request's body, answers it; returns whether to keep the
        connection for another."""
        try:
            method, path, version, headers = _parse_head(head)
        except _BadRequest as e:
            await self._write_error(writer, e.error)
            return False
        keep_alive = _keep_alive(version, headers)
        try:
            body = await asyncio.wait_for(self._read_body(headers, reader, writer), self._read_timeout)
        except _BadRequest as e:
            await self._write_error(writer, e.error)
            return False
        except asyncio.TimeoutError:
            await self._write_error(writer, Error("the request body did not arrive in time", 408, "micro.server"))
            return False
        response = await self._answer(HttpRequest(method, path, headers, body), reader)
        if response is None:
            return False  # the caller went away
        keep_alive = keep_alive and not self._closing
        await self._write(writer, response, keep_alive, chunked=version == "HTTP/1.1")
        return keep_alive and (response.stream is None or version == "HTTP/1.1")

    async def _answer(self, request: HttpRequest, reader: asyncio.StreamReader) -> HttpResponse | None:
        """Runs the handler; if the caller closes the connection meanwhile (it gave
        up or was cancelled), cancels it and returns None."""
        handling = asyncio.ensure_future(self._handler(request))
        while True:
            done, _ = await asyncio.wait({handling}, timeout=_HANGUP_CHECK)
            if done:
                return handling.result()
            if reader.at_eof() or reader.exception() is not None:
                handling.cancel()
                try:
                    await handling
                except (asyncio.CancelledError, Exception):  # noqa: BLE001 (nobody to answer)
                    pass
                return None

    async def _read_body(
        self, headers: dict[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        too_large = _BadRequest(413, f"request body is over the limit of {self._max_body} bytes")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise _BadRequest(400, "malformed chunked body") from None
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers: ignored
                    return bytes(body)
                if len(body) + size > self._max_body:
                    raise too_large
                body += await reader.readexactly(size)
                await reader.readexactly(2)
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequest(400, "malformed Content-Length") from None
        if length < 0:
            raise _BadRequest(400, "malformed Content-Length")
        if length > self._max_body:
            raise too_large
        return await reader.readexactly(length)

    async def _write(self, writer: asyncio.StreamWriter, rsp: HttpResponse, keep_alive: bool, chunked: bool) -> None:
        head = [f"HTTP/1.1 {rsp.status} {reason(rsp.status)}"]
        head += [f"{k}: {v}" for k, v in rsp.headers.items()]
        if rsp.stream is None:
            head.append(f"content-length: {len(rsp.body)}")
        elif chunked:
            head.append("transfer-encoding: chunked")
        else:
            keep_alive = False  # an HTTP/1.0 stream ends when the connection does
        head.append("connection: keep-alive" if keep_alive else "connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if rsp.stream is None:
            writer.write(rsp.body)
            await writer.drain()
            return
        try:
            async for chunk in rsp.stream:
                if chunk:
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await writer.drain()  # each message leaves as soon as it is made
        finally:
            aclose = getattr(rsp.stream, "aclose", None)
            if aclose is not None:
                await aclose()  # the caller went away: stop making messages
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def _write_error(self, writer: asyncio.StreamWriter, error: Error) -> None:
        rsp = HttpResponse(error.code, {"content-type": "application/json"}, error.to_json().encode())
        try:
            await self._write(writer, rsp, keep_alive=False, chunked=False)
        except ConnectionError:
            pass


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed HTTP request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(400, f"malformed header line {line!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return parts[0], parts[1], parts[2], headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.1":
        return "close" not in connection
    return "keep-alive" in connection
