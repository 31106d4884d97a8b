"""A subscription to a topic, delivered by an asyncio task."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from ..broker import _RETRY_CODES
from ..errors import Error
from ..records import Message
from ._stream import Stream

__all__ = ["Subscription"]

log = logging.getLogger("micro")


class Subscription:
    """A running subscription, made by :meth:`micro.aio.Client.subscribe`.

    Messages are handed to the handler (a plain or ``async`` function) one at a
    time, in order, by one task. An exception in the handler is logged (logger
    ``micro``) and the next message delivered; delivery is at most once. If the
    connection to the proxy breaks, the subscription is opened again.
    ``await stop()`` ends it; so does leaving an ``async with`` block.
    """

    def __init__(
        self,
        topic: str,
        queue: str | None,
        open_stream: Callable[[], Stream[Message]],
        handler: Callable[[Message], Any],
    ):
        #: The topic subscribed to.
        self.topic = topic
        #: The queue group, if any.
        self.queue = queue
        self._open = open_stream
        self._handler = handler
        self._stream: Stream[Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: Error | None = None
        self._stopping = False

    @classmethod
    async def start(
        cls,
        topic: str,
        queue: str | None,
        open_stream: Callable[[], Stream[Message]],
        handler: Callable[[Message], Any],
        ready_timeout: float | None,
    ) -> Subscription:
        """Opens the stream, waits until the proxy has subscribed, then starts the
        delivery task."""
        sub = cls(topic, queue, open_stream, handler)
        stream = open_stream()
        try:
            await stream.wait_ready(ready_timeout)
        except BaseException:
            stream.cancel()
            raise
        sub._stream = stream
        sub._task = asyncio.create_task(sub._run(), name=f"micro-subscribe-{topic}")
        return sub

    @property
    def active(self) -> bool:
        """Whether messages are still being delivered."""
        return self._task is not None and not self._task.done()

    @property
    def error(self) -> Error | None:
        """The error that ended the subscription, if one did."""
        return self._error

    async def stop(self) -> None:
        """Ends the subscription (a handler running is cancelled)."""
        self._stopping = True
        if self._stream is not None:
            self._stream.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def wait(self) -> None:
        """Waits until the subscription ends; raises its error if it failed."""
        if self._task is not None:
            try:
                await asyncio.shield(self._task)
            except asyncio.CancelledError:
                if not self._task.cancelled():
                    raise
        if self._error is not None:
            raise self._error

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            try:
                async for message in self._stream or ():  # type: ignore[union-attr]
                    backoff = 0.1
                    await self._deliver(message)
            except Error as e:
                if self._stopping:
                    return
                if e.code not in _RETRY_CODES:
                    self._error = e
                    log.error("subscription to %s ended: %s", self.topic, e)
                    return
                log.warning("subscription to %s broke (%s); opening it again", self.topic, e)
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            self._stream = self._open()

    async def _deliver(self, message: Message) -> None:
        try:
            result = self._handler(message)
            if inspect.isawaitable(result):
                await result
        except Exception:  # noqa: BLE001 (one bad message must not end the subscription)
            log.exception("handler of %s failed on message %s", self.topic, message.id)
