"""Request bodies, declared once: a `Body` lists its fields, each of which checks a value
and writes its own JSON Schema, so the document shows the limits the handlers apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import ClientDisconnect, Request

from tripline.collector.api.encoding import BadJson, LoneSurrogate, NotUtf8, parse_json
from tripline.collector.api.errors import ApiError
from tripline.collector.api.jsonschema import strict
from tripline.collector.api.params import MAX_BODY_BYTES, MAX_TEXT, NO_NUL, TEXT, plain


def _kinds(kind: str, nullable: bool) -> str | list[str]:
    return [kind, "null"] if nullable else kind


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description} if description else schema


@dataclass(frozen=True, kw_only=True)
class Field:
    nullable: bool = False
    description: str = ""

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, key: str, value: Any) -> Any:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class TextField(Field):
    """A string, never NUL, up to max_length.

    `blank`: the error (``{key}`` filled in) for text that is only whitespace, which is then
    refused; `strip`: keep the text stripped; `check`: a further check raising ValueError;
    `null_as`: what null becomes when nullable.
    """

    max_length: int = MAX_TEXT
    pattern: str = ""
    blank: str = ""
    strip: bool = False
    check: Callable[[str, str], str] | None = None
    null_as: str | None = None

    def schema(self) -> dict[str, Any]:
        pattern = self.pattern or (TEXT if self.blank else NO_NUL)
        schema = {
            "type": _kinds("string", self.nullable),
            "maxLength": self.max_length,
            "pattern": pattern,
        }
        return _described(schema, self.description)

    def parse(self, key: str, value: Any) -> Any:
        if value is None and self.nullable:
            return self.null_as
        if not isinstance(value, str):
            raise ApiError(400, f"field {key!r} must be a string")
        what = f"field {key!r}"
        # Every text in a body is held to MAX_TEXT first, then to its own, smaller limit
        # (a `check` applies its own limit, in its own order of complaints).
        plain(value, what, MAX_TEXT)
        if self.max_length < MAX_TEXT and self.check is None:
            plain(value, what, self.max_length)
        if self.blank and not value.strip():
            raise ApiError(400, self.blank.format(key=key))
        if self.check is not None:
            try:
                value = self.check(value, what)
            except ValueError as exc:
                raise ApiError(400, str(exc)) from None
        return value.strip() if self.strip else value


@dataclass(frozen=True, kw_only=True)
class IntField(Field):
    low: int
    high: int

    def schema(self) -> dict[str, Any]:
        schema = {
            "type": _kinds("integer", self.nullable),
            "minimum": self.low,
            "maximum": self.high,
        }
        return _described(schema, self.description)

    def parse(self, key: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not self.low <= value <= self.high
        ):
            raise ApiError(
                400, f"field {key!r} must be a whole number from {self.low} to {self.high}"
            )
        return value


@dataclass(frozen=True, kw_only=True)
class SecondsField(Field):
    """A number of seconds from `low` (excluded when `above`) to `high`, as a float;
    `meaning` names it in the error ("unix seconds from 0")."""

    low: float = 0.0
    high: float
    above: bool = False
    meaning: str

    def schema(self) -> dict[str, Any]:
        bound = "exclusiveMinimum" if self.above else "minimum"
        schema = {"type": _kinds("number", self.nullable), "maximum": self.high, bound: self.low}
        return _described(schema, self.description)

    def parse(self, key: str, value: Any) -> Any:
        if value is None and self.nullable:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not self.low <= value <= self.high
            or (self.above and value == self.low)
        ):
            raise ApiError(
                400, f"field {key!r} must be a number of {self.meaning} up to {self.high:.0f}"
            )
        return float(value)


@dataclass(frozen=True)
class Body:
    """A JSON object body: only `fields`, all of `required`. `needed` tells the document
    a body must be sent (the handler then refuses what is missing)."""

    fields: Mapping[str, Field] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    needed: bool = False

    def schema(self) -> dict[str, Any]:
        return strict(self.required, **{k: f.schema() for k, f in self.fields.items()})

    def parse(self, data: Any) -> dict[str, Any]:
        """The fields sent, each checked (in the order sent) and converted."""
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object")
        unknown = set(data) - set(self.fields)
        if unknown:
            known = ", ".join(sorted(self.fields)) or "none"
            raise ApiError(400, f"unknown fields {sorted(unknown)} (known: {known})")
        missing = [name for name in self.required if name not in data]
        if missing:
            raise ApiError(400, f"missing required fields {missing}")
        return {key: self.fields[key].parse(key, value) for key, value in data.items()}


async def read_json(request: Request) -> Any:
    """The body as strict JSON ({} when empty).

    The body is counted while it streams in (chunked ones too) and refused with 413 the
    moment it passes MAX_BODY_BYTES, so a huge body never sits in memory; anything that
    is not strict JSON answers 400 (see `encoding.parse_json`).
    """
    too_large = ApiError(413, f"the request body must be at most {MAX_BODY_BYTES} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "Content-Length must be a whole number of bytes")
        if int(declared) > MAX_BODY_BYTES:
            raise too_large
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise too_large
    except ClientDisconnect:
        raise ApiError(400, "the request body was not received whole") from None
    if not raw.strip():
        return {}
    try:
        return parse_json(bytes(raw))
    except NotUtf8:
        raise ApiError(400, "the request body must be UTF-8") from None
    except BadJson as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from None
    except LoneSurrogate:
        raise ApiError(
            400, "the request body holds a lone surrogate (\\ud800-\\udfff) in a string"
        ) from None
    except (ValueError, RecursionError):
        raise ApiError(400, "the request body must be a JSON object") from None
