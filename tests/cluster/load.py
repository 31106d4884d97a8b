"""Steady, bounded load through the API gateway, measuring every request.

`Load` runs in a thread of its own with an asyncio loop: `connections` kept-alive
HTTP/1.1 connections, each sending `POST /greeter/hello {"name":"John"}` one at
a time, paced to one request per `interval` seconds (so at most
`connections / interval` requests per second). It stops by itself after
`max_seconds` or `max_requests`, whichever comes first, or when `stop()` is
called. Every request is recorded: when it started, its latency, whether it
succeeded, and which greeter node answered (each node of the cluster tests greets
with its own word, `Hello-<tag> John`).

A request fails when it gets anything but `200` with a greeting for John, or no
answer within `timeout` (a socket error or a timeout). A failed connection is
replaced by a new one for the next request; a request is never retried (that
would hide exactly what the scenarios look for).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

GREETING = re.compile(r"^Hello-(?P<tag>[\w.-]+) John$")
BODY = b'{"name":"John"}'


@dataclass
class Request:
    at: float  # seconds since the load started
    latency: float  # seconds
    ok: bool
    node: str | None  # the greeter's tag when it answered
    error: str | None = None


@dataclass
class Result:
    requests: list[Request] = field(default_factory=list)
    started: float = 0.0  # time.monotonic() at the start

    @property
    def sent(self) -> int:
        return len(self.requests)

    @property
    def failures(self) -> list[Request]:
        return [r for r in self.requests if not r.ok]

    @property
    def failed(self) -> int:
        return len(self.failures)

    def latency_ms(self, q: float = 1.0) -> float:
        if not self.requests:
            return 0.0
        lat = sorted(r.latency for r in self.requests)
        i = min(len(lat) - 1, max(0, int(round(q * len(lat) + 0.5)) - 1))
        return lat[i] * 1000

    def per_node(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        """Answers per node tag among requests started in [since, until) (seconds
        since the start of the load)."""
        return Counter(r.node for r in self.requests if r.ok and since <= r.at < until)

    def at(self, monotonic: float) -> float:
        """A time.monotonic() value as seconds since the start of the load."""
        return monotonic - self.started

    def describe_failures(self, limit: int = 10) -> str:
        lines = [f"t={r.at:.2f}s {r.latency * 1000:.0f}ms {r.error}" for r in self.failures[:limit]]
        more = self.failed - limit
        return "\n".join(lines + ([f"... and {more} more"] if more > 0 else []))


class Load:
    def __init__(self, host: str, port: int, *, connections: int = 4, interval: float = 0.02,
                 max_seconds: float = 90.0, max_requests: int = 40_000, timeout: float = 10.0,
                 path: str = "/greeter/hello"):
        self.host, self.port, self.path = host, port, path
        self.connections = connections
        self.interval = interval
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.timeout = timeout
        self.result = Result()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._budget = max_requests

    # -- control (from the test's thread)

    def start(self) -> "Load":
        self.result.started = time.monotonic()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True,
                                        name="load")
        self._thread.start()
        return self

    def stop(self) -> Result:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.timeout + 5)
        return self.snapshot()

    def snapshot(self) -> Result:
        with self._lock:
            return Result(list(self.result.requests), self.result.started)

    def now(self) -> float:
        """Seconds since the load started."""
        return time.monotonic() - self.result.started

    def wait_for_node(self, tag: str, timeout: float, since: float | None = None) -> float:
        """Waits until node `tag` answers a request started after `since` (seconds
        since the start; default now); returns when that request started."""
        since = self.now() if since is None else since
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for r in reversed(self.result.requests):
                    if r.at < since:
                        break
                    if r.ok and r.node == tag:
                        return r.at
            if self._stop.is_set() or not (self._thread and self._thread.is_alive()):
                break
            time.sleep(0.05)
        raise AssertionError(f"node {tag} answered no request within {timeout}s "
                             f"(answers since t={since:.1f}s: {dict(self.snapshot().per_node(since))})")

    # -- the load (in its own thread)

    async def _main(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        await asyncio.gather(*(self._connection(i, deadline) for i in range(self.connections)))

    def _claim(self) -> bool:
        with self._lock:
            if self._budget <= 0:
                return False
            self._budget -= 1
            return True

    async def _connection(self, index: int, deadline: float) -> None:
        # Spread the connections over the interval.
        next_at = time.monotonic() + self.interval * index / max(1, self.connections)
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not self._stop.is_set() and time.monotonic() < deadline and self._claim():
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + self.interval, time.monotonic())
                start = time.monotonic()
                try:
                    if conn is None:
                        conn = await asyncio.wait_for(
                            asyncio.open_connection(self.host, self.port), self.timeout)
                    status, body, keep = await asyncio.wait_for(self._post(*conn), self.timeout)
                    node, error = self._check(status, body)
                    if not keep:
                        conn = self._close(conn)
                except Exception as e:  # noqa: BLE001 (every error is a failed request)
                    node, error = None, f"{type(e).__name__}: {e}".strip()
                    conn = self._close(conn)
                rec = Request(start - self.result.started, time.monotonic() - start,
                              error is None, node, error)
                with self._lock:
                    self.result.requests.append(rec)
        finally:
            self._close(conn)

    @staticmethod
    def _close(conn):
        if conn is not None:
            conn[1].close()
        return None

    @staticmethod
    def _check(status: int, body: bytes) -> tuple[str | None, str | None]:
        if status != 200:
            return None, f"HTTP {status}: {body[:200]!r}"
        try:
            message = json.loads(body)["message"]
        except (ValueError, KeyError, TypeError):
            return None, f"not a greeting: {body[:200]!r}"
        m = GREETING.match(message)
        if not m:
            return None, f"unexpected greeting {message!r}"
        return m.group("tag"), None

    async def _post(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        writer.write(
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
            + BODY
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        keep = headers.get("connection", "").lower() != "close"
        return status, body, keep
