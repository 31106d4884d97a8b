from google.protobuf import struct_pb2 as _struct_pb2
from . import broker_pb2 as _broker_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallRequest(_message.Message):
    __slots__ = ("service", "endpoint", "request", "body", "metadata", "timeout_ms", "version", "address")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    service: str
    endpoint: str
    request: _struct_pb2.Value
    body: bytes
    metadata: _containers.ScalarMap[str, str]
    timeout_ms: int
    version: str
    address: str
    def __init__(self, service: _Optional[str] = ..., endpoint: _Optional[str] = ..., request: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., body: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., timeout_ms: _Optional[int] = ..., version: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class CallResponse(_message.Message):
    __slots__ = ("response", "body")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    response: _struct_pb2.Value
    body: bytes
    def __init__(self, response: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., body: _Optional[bytes] = ...) -> None: ...
