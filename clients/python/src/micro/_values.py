"""JSON values <-> ``google.protobuf.Value``, the type of every JSON field of the
proxy's API (call requests and responses, messages, config values)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

# Numbers in a Value are doubles; whole ones up to 2**53 are given back as int
# (JSON does not tell 3 from 3.0, Python code does).
_EXACT = 2**53


def to_value(obj: Any) -> struct_pb2.Value:
    """A Value holding the JSON value ``obj`` (dict, list, str, int, float, bool, None)."""
    value = struct_pb2.Value()
    try:
        json_format.ParseDict(obj, value)
    except json_format.ParseError as e:
        from .errors import BadRequest

        raise BadRequest(f"not a JSON value: {e}", id="micro.client") from None
    return value


def from_value(value: struct_pb2.Value) -> Any:
    """The plain Python value a Value holds."""
    return _ints(json_format.MessageToDict(value))


def _ints(obj: Any) -> Any:
    if isinstance(obj, float):
        return int(obj) if obj.is_integer() and abs(obj) <= _EXACT else obj
    if isinstance(obj, dict):
        return {k: _ints(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_ints(v) for v in obj]
    return obj
