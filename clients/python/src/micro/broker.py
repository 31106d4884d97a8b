"""A subscription to a topic, read on a background thread (synchronous API)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ._stream import Stream
from .errors import Error
from .records import Message

__all__ = ["Subscription"]

log = logging.getLogger("micro")

# Errors after which the stream is opened again (the proxy restarted or went away
# for a moment); any other error ends the subscription.
_RETRY_CODES = {502, 503, 504}


class Subscription:
    """A running subscription, made by :meth:`micro.Client.subscribe`.

    Messages are handed to the handler one at a time, in order, on one background
    thread. An exception in the handler is logged (logger ``micro``) and the next
    message is delivered; delivery is at most once. If the connection to the proxy
    breaks, the subscription is opened again (messages published meanwhile are
    missed). ``stop()`` ends it; so does leaving a ``with`` block.
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
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._stream: Stream[Message] | None = None
        self._thread: threading.Thread | None = None
        self._error: Error | None = None

    @classmethod
    def start(
        cls,
        topic: str,
        queue: str | None,
        open_stream: Callable[[], Stream[Message]],
        handler: Callable[[Message], Any],
        ready_timeout: float | None,
    ) -> Subscription:
        """Opens the stream, waits until the proxy has subscribed, then starts the
        delivery thread."""
        sub = cls(topic, queue, open_stream, handler)
        stream = open_stream()
        try:
            stream.wait_ready(ready_timeout)
        except Error:
            stream.close()
            raise
        sub._stream = stream
        sub._thread = threading.Thread(target=sub._run, name=f"micro-subscribe-{topic}", daemon=True)
        sub._thread.start()
        return sub

    @property
    def active(self) -> bool:
        """Whether messages are still being delivered."""
        return not self._ended.is_set()

    @property
    def error(self) -> Error | None:
        """The error that ended the subscription, if one did."""
        return self._error

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ends the subscription and waits (up to ``timeout`` seconds) for the
        handler to return. Safe to call more than once, and from the handler."""
        self._stopping.set()
        with self._lock:
            if self._stream is not None:
                self._stream.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until the subscription ends (stopped, or failed: then its error is
        raised). Returns False if ``timeout`` passed first."""
        if not self._ended.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    for message in self._stream or ():
                        backoff = 0.1
                        self._deliver(message)
                except Error as e:
                    if self._stopping.is_set():
                        return
                    if e.code not in _RETRY_CODES:
                        self._error = e
                        log.error("subscription to %s ended: %s", self.topic, e)
                        return
                    log.warning("subscription to %s broke (%s); opening it again", self.topic, e)
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, 5.0)
                with self._lock:
                    if self._stopping.is_set():
                        return
                    self._stream = self._open()
        finally:
            self._ended.set()

    def _deliver(self, message: Message) -> None:
        try:
            self._handler(message)
        except Exception:  # noqa: BLE001 (one bad message must not end the subscription)
            log.exception("handler of %s failed on message %s", self.topic, message.id)
