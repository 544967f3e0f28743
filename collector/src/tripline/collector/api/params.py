"""Query and path parameters, declared once: each parses a request's text and writes its own
OpenAPI schema, so the limits the handlers apply are the limits the document shows.

Also the API's input limits, which `api.body` shares.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request

from tripline.collector.api.errors import ApiError
from tripline.collector.apitokens import ApiToken

# Fits any body the document allows: 10,000 characters escaped as JSON take up to 120 kB.
MAX_BODY_BYTES = 256 * 1024
MAX_TEXT = 10_000
MAX_FILTER = 256
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000
MAX_ID = 2**63 - 1
MAX_EXPIRES_IN = 10 * 365 * 86400
# Unix seconds up to the end of the year 9999, the last one datetime can show.
MAX_TIME = 253_402_300_799
# A recurring window's length: the calendar looks back this far for a covering occurrence.
MAX_WINDOW_DURATION = 31 * 86400

# Patterns for the document (JSON Schema's ECMA dialect), matching what the parsers refuse.
NO_NUL = "^[^\\u0000]*$"
# A name as apitokens.check_name takes it: no control characters (C0, DEL, C1) and none of
# the other characters str.strip() removes at either end. Spelled out rather than \\s,
# whose meaning differs between regex dialects.
_CONTROL = "\\u0000-\\u001f\\u007f-\\u009f"
_SPACE = " \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NAME = f"^[^{_CONTROL}{_SPACE}](?:[^{_CONTROL}]*[^{_CONTROL}{_SPACE}])?$"
# some text: a character that is neither NUL nor whitespace to str.strip()
_ALL_SPACE = f"\\t-\\r\\u001c-\\u001f\\u0085{_SPACE}"
TEXT = f"^[^\\u0000]*[^\\u0000{_ALL_SPACE}][^\\u0000]*$"

_DIGITS = re.compile(r"[0-9]{1,19}")


def whole(text: str, what: str, low: int, high: int) -> int:
    if _DIGITS.fullmatch(text) is None or not low <= int(text) <= high:
        raise ApiError(400, f"{what} must be a whole number from {low} to {high}, not {text!r}")
    return int(text)


def plain(text: str, what: str, max_length: int = MAX_FILTER) -> str:
    """Free text for a filter or note: any characters but NUL (PostgreSQL cannot store it)."""
    if "\x00" in text:
        raise ApiError(400, f"{what} must not contain NUL characters")
    if len(text) > max_length:
        raise ApiError(400, f"{what} must be at most {max_length} characters")
    return text


def scope_filter(token: ApiToken, customer: str | None) -> None:
    """403 when a filter names a customer outside the token's scope."""
    if customer is not None and not token.allows(customer):
        raise ApiError(403, f"this API token may not see customer {customer!r}")


@dataclass(frozen=True, kw_only=True)
class Param:
    """One query or path parameter: `parse` checks a request's text, `openapi` declares it."""

    name: str
    where: Literal["query", "path"] = "query"
    description: str = ""
    # the parameter as error messages name it (a path's "ticket id"); default: its name
    label: str = ""
    # a query parameter the operation cannot do without (path parameters always are)
    required: bool = False

    @property
    def what(self) -> str:
        return self.label or self.name

    def schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def parse(self, text: str, token: ApiToken) -> Any:
        raise NotImplementedError

    @property
    def default(self) -> Any:
        return None

    def openapi(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "in": self.where,
            "required": self.where == "path" or self.required,
            "schema": self.schema(),
            "description": self.description,
        }


@dataclass(frozen=True, kw_only=True)
class Whole(Param):
    """A whole number from low to high (ids, tiers, paging)."""

    low: int
    high: int
    when_absent: int | None = None

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.low, "maximum": self.high}

    def parse(self, text: str, token: ApiToken) -> int:
        return whole(text, self.what, self.low, self.high)

    @property
    def default(self) -> Any:
        return self.when_absent


@dataclass(frozen=True, kw_only=True)
class Choice(Param):
    choices: tuple[str, ...]

    def schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}

    def parse(self, text: str, token: ApiToken) -> str:
        if text not in self.choices:
            raise ApiError(
                400, f"{self.what} must be one of {', '.join(self.choices)}, not {text!r}"
            )
        return text


@dataclass(frozen=True, kw_only=True)
class Text(Param):
    """Free text up to max_length, never NUL; `empty` is the error for an empty one when
    min_length is 1."""

    max_length: int = MAX_FILTER
    min_length: int = 0
    pattern: str = NO_NUL
    empty: str = ""

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if self.min_length:
            schema["minLength"] = self.min_length
        return {**schema, "maxLength": self.max_length, "pattern": self.pattern}

    def parse(self, text: str, token: ApiToken) -> str:
        if len(text) < self.min_length:
            raise ApiError(400, self.empty or f"{self.what} must not be empty")
        return plain(text, self.what, self.max_length)


@dataclass(frozen=True, kw_only=True)
class Customer(Text):
    """A customer filter: it must lie inside the caller's scope (403 otherwise)."""

    name: str = "customer"
    description: str = "only this customer (inside the scope)"

    def parse(self, text: str, token: ApiToken) -> str:
        customer = super().parse(text, token)
        scope_filter(token, customer)
        return customer


LIMIT = Whole(name="limit", low=1, high=MAX_LIMIT, when_absent=100, description="default 100")
OFFSET = Whole(name="offset", low=0, high=MAX_OFFSET, when_absent=0)
PAGING = (LIMIT, OFFSET)
CUSTOMER = Customer()


def path_id(name: str, label: str, description: str = "") -> Whole:
    """An object's id in the path; `label` names it in errors ("ticket id")."""
    return Whole(
        name=name, where="path", low=1, high=MAX_ID, label=label, description=description or label
    )


def parse_query(request: Request, declared: Collection[Param], token: ApiToken) -> dict[str, Any]:
    """Refuse unknown and repeated parameters, then parse each declared one in order."""
    allowed = {p.name for p in declared}
    found: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ApiError(400, f"unknown query parameter {key!r} (known: {known})")
        if key in found:
            raise ApiError(400, f"query parameter {key!r} given more than once")
        found[key] = value
    parsed: dict[str, Any] = {}
    for p in declared:
        if p.name in found:
            parsed[p.name] = p.parse(found[p.name], token)
        elif p.required:
            raise ApiError(400, f"query parameter {p.name!r} is required")
        else:
            parsed[p.name] = p.default
    return parsed


def page(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """`items` holds up to limit + 1 entries: one more tells there is a next page."""
    more = len(items) > limit
    return {"items": items[:limit], "next_offset": offset + limit if more else None}
