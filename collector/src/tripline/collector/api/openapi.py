"""The OpenAPI 3.1 document, written from the routes' declarations (`api.routing`).

tests/integration/test_api_schemathesis.py checks every answer of the API against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tripline.collector.api.errors import ERROR_TEXT
from tripline.collector.api.jsonschema import obj, ref
from tripline.collector.api.routing import Operation
from tripline.collector.urls import API_PREFIX


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def describe(op: Operation) -> dict[str, Any]:
    """The document's entry for one operation."""
    responses = {str(op.status): {"description": "OK", **_json(op.answer)}}
    for media in op.media:
        responses[str(op.status)]["content"][media] = {"schema": {"type": "string"}}
    too_large = (413,) if op.body is not None else ()
    for status in (400, 401, *op.errors, *too_large, 503):
        responses[str(status)] = {"description": ERROR_TEXT[status], **_json(ref("Error"))}
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "parameters": [p.openapi() for p in (*op.path_params, *op.query)],
        "responses": responses,
    }
    if op.body is not None:
        out["requestBody"] = {"required": op.body.needed, **_json(op.body.schema())}
    return out


def document(operations: Iterable[Operation], schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The document for `operations`, with `schemas` (the answers' shapes they name)."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry = paths.setdefault(op.path, {})
        method = op.method.lower()
        if method in entry:
            raise ValueError(f"{op.method} {op.path} is declared twice")
        entry[method] = describe(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tripline collector API", "version": "1"},
        "servers": [{"url": API_PREFIX}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": obj(("error",), error={"type": "string"}), **schemas},
        },
    }
