"""micro for Python: call micro services, publish and subscribe, discover, read
config, and serve Python functions as micro endpoints, all through the proxy of
``micro server`` (``localhost:8081``, or ``MICRO_PROXY``).

``micro.Client`` and ``micro.Service`` are synchronous; ``micro.aio`` has the
asyncio versions. Every failure is a :class:`micro.Error`.
"""

from ._options import DEFAULT_PROXY
from ._stream import Stream
from .broker import Subscription
from .client import Client
from .config import MISSING, Config
from .errors import (
    BadRequest,
    Cancelled,
    Conflict,
    Error,
    Forbidden,
    InternalError,
    NotFound,
    Timeout,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from .handlers import Context, current_context
from .records import ConfigChange, Endpoint, Message, MessageType, Node, ServiceEvent, ServiceRecord
from .registry import Registry
from .service import Service

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_PROXY",
    "MISSING",
    "BadRequest",
    "Cancelled",
    "Client",
    "Config",
    "ConfigChange",
    "Conflict",
    "Context",
    "Endpoint",
    "Error",
    "Forbidden",
    "InternalError",
    "Message",
    "MessageType",
    "Node",
    "NotFound",
    "Registry",
    "Service",
    "ServiceEvent",
    "ServiceRecord",
    "Stream",
    "Subscription",
    "Timeout",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "current_context",
]
