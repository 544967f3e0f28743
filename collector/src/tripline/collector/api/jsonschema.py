"""Small builders for the JSON Schemas of answers (the document's components)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def or_null(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


def obj(required: Collection[str], **properties: Any) -> dict[str, Any]:
    """An object an answer holds: these properties, and more may come in later versions."""
    return {"type": "object", "required": list(required), "properties": properties}


def strict(required: Collection[str] = (), **properties: Any) -> dict[str, Any]:
    """An object a request holds: these properties and no others."""
    return {**obj(required, **properties), "additionalProperties": False}


def array_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": schema}


def page_of(name: str) -> dict[str, Any]:
    """The answer of `params.page` holding `name` objects."""
    return obj(
        ("items", "next_offset"),
        items=array_of(ref(name)),
        next_offset={**or_null("integer"), "description": "offset of the next page, if any"},
    )
