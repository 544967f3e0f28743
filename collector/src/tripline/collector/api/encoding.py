"""JSON both ways: answers (infinite numbers as null) and strict parsing of request bodies."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.responses import JSONResponse


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        # A value can be infinite (an agent that never reported has been silent "forever");
        # JSON has no such number, so it is sent as null.
        return super().render(finite(content))


def finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class BadJson(ValueError):
    """The body is JSON-shaped but breaks one of `parse_json`'s rules; says which."""


class NotUtf8(ValueError):
    pass


class LoneSurrogate(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({key for key in keys if keys.count(key) > 1})
        raise BadJson(f"duplicate keys {duplicated[:5]}")
    return dict(pairs)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"number {text[:40]} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise BadJson(f"{name} is not JSON")


def parse_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, no numbers beyond a float, no duplicate
    keys, no lone surrogates (``"\\ud800"`` parses in Python but cannot be stored or
    encoded again), nesting as deep as the parser allows.

    Raises NotUtf8, BadJson (with the reason), LoneSurrogate, or ValueError/RecursionError
    for anything else that is not JSON.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NotUtf8 from None
    data = json.loads(
        text,
        parse_float=_json_float,
        parse_constant=_refuse_constant,
        object_pairs_hook=_no_duplicate_keys,
    )
    pending = [data]
    while pending:  # iterative: the document may be nested as deep as the parser allowed
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise LoneSurrogate from None
    return data
