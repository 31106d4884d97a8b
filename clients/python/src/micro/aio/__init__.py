"""micro for asyncio: :class:`Client` (grpc.aio) and :class:`Service`.

The same API as the top-level ``micro`` package, with ``await``: streams, watches
and subscriptions are async iterators and tasks, and cancelling a task cancels the
RPC it awaits.
"""

from ._stream import Stream
from .broker import Subscription
from .client import Client
from .config import Config
from .registry import Registry
from .service import Service

__all__ = ["Client", "Config", "Registry", "Service", "Stream", "Subscription"]
