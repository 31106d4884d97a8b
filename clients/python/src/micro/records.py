"""The records the proxy's API returns, as plain dataclasses: registry records and
events, broker messages and config changes (and their protobuf conversions)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._proto import broker_pb2, config_pb2, registry_pb2
from ._values import from_value, to_value

__all__ = ["MessageType", "Endpoint", "Node", "ServiceRecord", "ServiceEvent", "Message", "ConfigChange"]


@dataclass
class MessageType:
    """A message type of an endpoint: its name and the JSON Schema of its JSON form."""

    name: str = ""
    schema: Any = None


@dataclass
class Endpoint:
    """An endpoint of a service (``Greeter.Hello``) or a subscription (named by its
    topic). ``metadata["stream"]`` is ``"false"``, ``"server"``, ``"client"`` or
    ``"bidi"`` for methods."""

    name: str
    request: MessageType | None = None
    response: MessageType | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Node:
    """One running instance of a service: an id, the ``host:port`` it is called on,
    and metadata (``protocol``: ``grpc+json`` or ``http-json``)."""

    id: str
    address: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class ServiceRecord:
    """One version of a service in the registry, with its endpoints and nodes."""

    name: str
    version: str = "latest"
    metadata: dict[str, str] = field(default_factory=dict)
    endpoints: list[Endpoint] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    def to_proto(self) -> registry_pb2.Service:
        """The record as the proto message ``micro.v1.Service``."""
        return registry_pb2.Service(
            name=self.name,
            version=self.version,
            metadata=self.metadata,
            endpoints=[
                registry_pb2.Endpoint(
                    name=e.name,
                    request=_type_to_proto(e.request),
                    response=_type_to_proto(e.response),
                    metadata=e.metadata,
                )
                for e in self.endpoints
            ],
            nodes=[registry_pb2.Node(id=n.id, address=n.address, metadata=n.metadata) for n in self.nodes],
        )

    @staticmethod
    def from_proto(pb: registry_pb2.Service) -> ServiceRecord:
        """The record of a ``micro.v1.Service`` message."""
        return ServiceRecord(
            name=pb.name,
            version=pb.version,
            metadata=dict(pb.metadata),
            endpoints=[
                Endpoint(
                    name=e.name,
                    request=_type_from_proto(e.request) if e.HasField("request") else None,
                    response=_type_from_proto(e.response) if e.HasField("response") else None,
                    metadata=dict(e.metadata),
                )
                for e in pb.endpoints
            ],
            nodes=[Node(id=n.id, address=n.address, metadata=dict(n.metadata)) for n in pb.nodes],
        )


def _type_to_proto(t: MessageType | None) -> registry_pb2.Type | None:
    if t is None:
        return None
    pb = registry_pb2.Type(name=t.name)
    if t.schema is not None:
        pb.schema.CopyFrom(to_value(t.schema))
    return pb


def _type_from_proto(pb: registry_pb2.Type) -> MessageType:
    return MessageType(name=pb.name, schema=from_value(pb.schema) if pb.HasField("schema") else None)


@dataclass
class ServiceEvent:
    """A change of the registry: ``action`` is ``"create"``, ``"update"`` or
    ``"delete"``; for ``"delete"`` the record holds the nodes that went away."""

    action: str
    service: ServiceRecord

    @staticmethod
    def from_proto(pb: registry_pb2.ServiceEvent) -> ServiceEvent:
        """The event of a ``micro.v1.ServiceEvent`` message."""
        return ServiceEvent(action=pb.action, service=ServiceRecord.from_proto(pb.service))


@dataclass
class Message:
    """A message received on a topic. A JSON message is in ``message`` (decoded);
    any other content type is in ``body`` as raw bytes."""

    topic: str
    id: str
    headers: dict[str, str]
    message: Any = None
    body: bytes = b""

    @staticmethod
    def from_proto(pb: broker_pb2.Message) -> Message:
        """The message of a ``micro.v1.Message``."""
        return Message(
            topic=pb.topic,
            id=pb.id,
            headers=dict(pb.headers),
            message=from_value(pb.message) if pb.HasField("message") else None,
            body=pb.body,
        )


@dataclass
class ConfigChange:
    """The value of a watched config path: the current one first, then each change.
    ``deleted`` is true (and ``value`` None) when the path is no longer set."""

    path: str
    value: Any
    deleted: bool = False

    @staticmethod
    def from_proto(pb: config_pb2.ConfigChange) -> ConfigChange:
        """The change of a ``micro.v1.ConfigChange``."""
        value = from_value(pb.value) if pb.HasField("value") else None
        return ConfigChange(path=pb.path, value=value, deleted=pb.deleted)
