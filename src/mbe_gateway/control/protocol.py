"""The control protocol's frames: JSON text over one WebSocket (docs/control-protocol.md).

    client → {"type": "req", "id": 1, "method": "status", "params": {}}
    server → {"type": "res", "id": 1, "ok": true, "payload": {...}}
             {"type": "res", "id": 1, "ok": false, "error": {"code": "forbidden", "message": "..."}}
             {"type": "event", "event": "message", "payload": {...}}

Everything a client sends is checked here, once, before any handler sees it: a frame that is
not a request becomes a `Malformed` value (with the id when one could be read, so the client
can match the refusal), and a handler's parameters are read through the `*_param` functions,
which refuse a wrong type or size with the `invalid_params` code instead of a traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mbe_gateway.errors import ControlError

# One inbound frame, before and after authentication. aiohttp fixes a connection's limit when
# it is opened, so the small pre-authentication cap is the only cap; it holds any chat message
# the pipeline accepts by default (16 000 characters of 4-byte UTF-8 is 64 000 bytes).
MAX_FRAME: Final = 64 * 1024
MAX_ID_CHARS: Final = 128

# Error codes, stable for clients (a message is for people and may change).
BAD_REQUEST: Final = "bad_request"  # not a request frame, or `connect` again
UNAUTHORIZED: Final = "unauthorized"  # no token, a wrong one, or a first frame that is not `connect`
FORBIDDEN: Final = "forbidden"  # the read-only token called an admin method
UNKNOWN_METHOD: Final = "unknown_method"
INVALID_PARAMS: Final = "invalid_params"
NOT_FOUND: Final = "not_found"  # no such session, pairing code, ...
UNAVAILABLE: Final = "unavailable"  # the part needed (a channel, MBE, a model) is not running
BUSY: Final = "busy"  # too many requests in flight on this connection
FAILED: Final = "failed"  # the request was understood and failed; the message says why
INTERNAL: Final = "internal"  # a bug: logged on the daemon's side

RequestId = str | int


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame that is not a request; `id` is its id when that much could be read."""

    id: RequestId | None
    message: str


def parse(text: str | bytes) -> Request | Malformed:
    """Read one client frame. Unknown fields are ignored, as they are everywhere in MBE's contract."""
    if isinstance(text, bytes):
        return Malformed(None, "frames are JSON text, not binary")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return Malformed(None, "the frame is not JSON")
    if not isinstance(frame, dict):
        return Malformed(None, "a frame is a JSON object")
    request_id = frame.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, str | int):
        return Malformed(None, 'a request needs an "id": a string or an integer')
    if isinstance(request_id, str) and not 0 < len(request_id) <= MAX_ID_CHARS:
        return Malformed(None, f'a string "id" has 1 to {MAX_ID_CHARS} characters')
    if frame.get("type") != "req":
        return Malformed(request_id, 'clients send requests: {"type": "req", ...}')
    method = frame.get("method")
    if not isinstance(method, str) or not method:
        return Malformed(request_id, 'a request needs a "method"')
    params = frame.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        return Malformed(request_id, '"params" is a JSON object')
    return Request(request_id, method, params)


def response(request_id: RequestId | None, payload: Mapping[str, Any]) -> str:
    return _dump({"type": "res", "id": request_id, "ok": True, "payload": payload})


def error(request_id: RequestId | None, code: str, message: str) -> str:
    return _dump({"type": "res", "id": request_id, "ok": False, "error": {"code": code, "message": message}})


def event(name: str, payload: Mapping[str, Any]) -> str:
    return _dump({"type": "event", "event": name, "payload": payload})


def _dump(frame: Mapping[str, Any]) -> str:
    # Non-ASCII as is: a Chinese reply is a third of the size of its \\u escapes.
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=str)


# --- parameters ----------------------------------------------------------------------------


def text_param(params: Mapping[str, Any], name: str, *, max_chars: int) -> str:
    """A required, non-blank string of at most `max_chars` characters."""
    value = params.get(name)
    if not isinstance(value, str) or not value.strip():
        raise _invalid(name, "a non-empty string", value)
    if len(value) > max_chars:
        raise ControlError(f'"{name}" is {len(value)} characters; at most {max_chars}', code=INVALID_PARAMS)
    return value


def optional_text_param(params: Mapping[str, Any], name: str, *, max_chars: int) -> str | None:
    return None if params.get(name) is None else text_param(params, name, max_chars=max_chars)


def int_param(params: Mapping[str, Any], name: str, *, default: int | None, low: int, high: int) -> int:
    """An integer from `low` to `high`; `default` when absent (None: required)."""
    value = params.get(name)
    if value is None and default is not None:
        return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # JSON has one number type; 20.0 is 20
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(name, f"an integer from {low} to {high}", value)
    return value


def _invalid(name: str, expected: str, value: object) -> ControlError:
    got = "nothing" if value is None else type(value).__name__.replace("dict", "object")
    return ControlError(f'"{name}" must be {expected}, got {got}', code=INVALID_PARAMS)
