"""The operators' HTTP API under /api/v1: tickets, agents, enrollment tokens, rules, alerts,
maintenance windows, parked deliveries.

Mounted on the collector's HTTP port (`collector.http`) and served in its asyncio loop.
Every request but the OpenAPI document carries ``Authorization: Bearer <API token>``
(`collector.apitokens`). A token sees only its customers: another customer's ticket, agent
or enrollment token answers 404 exactly as a missing one does, so nothing tells that it
exists; a request that itself names a customer outside the scope (a filter, a new
enrollment token) answers 403. Reads run in a worker thread; writes go through the
collector's committer, in one transaction with their audit row. Bad input answers 4xx
with ``{"error": "..."}``.

Layout: one module per resource (`tickets`, `agents`, `enrollment`, `rules` with alerts,
`windows` with suppressed alerts, `deliveries`), each declaring its routes once with
`routing.operation`; `params` and `body` hold the declared inputs and their limits,
`auth` the caller's token and scope, `errors` the error answers, `encoding` JSON both
ways, `openapi` the document written from the declarations, `app` `build_api`.
"""

from tripline.collector.api.app import build_api, openapi_document
from tripline.collector.api.context import ApiContext
from tripline.collector.api.errors import ApiError, unrouted
from tripline.collector.api.rules import rule_json
from tripline.collector.api.tickets import ticket_json
from tripline.collector.urls import API_PREFIX

__all__ = [
    "API_PREFIX",
    "ApiContext",
    "ApiError",
    "build_api",
    "openapi_document",
    "rule_json",
    "ticket_json",
    "unrouted",
]
