"""``POST /api/v1/agents/{agent_id}/snapshot``: an operator asks a PC what is happening now.

The collector asks the agent over its open stream and waits at most
``snapshot_timeout`` for the answer. Scoped like every agent route (an agent outside the
token's customers is "not found"); answered 504 when the agent has no stream to this
collector or does not answer in time, 429 when it was asked moments ago and no answer
is at hand. Read-only on the PC; recorded in the audit log.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripline.collector import apitokens
from tripline.collector.api import ApiContext, ApiError, _body, _Handlers, _Json, _query
from tripline.collector.snapshots import SnapshotUnavailable, TakenSnapshot


def snapshot_json(agent_id: str, hostname: str, taken: TakenSnapshot) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "hostname": hostname,
        "request_id": taken.request_id,
        "taken_at": taken.taken_at,
        "snapshot": taken.data,
    }


def routes(ctx: ApiContext) -> list[Route]:
    h = _Handlers(ctx)

    async def take_snapshot(request: Request) -> Response:
        token = await h._caller(request)
        _query(request, ())
        await _body(request, ())
        agent = await h._visible_agent(token, h._agent_id(request))
        if agent.revoked_at is not None:
            raise ApiError(409, f"agent {agent.agent_id} is revoked")
        broker = ctx.pipeline.snapshots
        try:
            taken = await broker.ask(agent.agent_id, broker.timeout)
        except SnapshotUnavailable as exc:
            if exc.reason == "rate_limited":
                retry = str(max(1, math.ceil(exc.retry_after)))
                raise ApiError(429, f"{exc}; retry in {retry}s", {"Retry-After": retry}) from None
            raise ApiError(
                504,
                f"no snapshot from agent {agent.agent_id} ({agent.hostname}): {exc}; "
                "is it online? (tripline agents list)",
            ) from None
        now = ctx.clock()
        await h._write(
            lambda conn: apitokens.record(
                conn,
                actor=token.name,
                action="agent.snapshot",
                target=f"agent/{agent.agent_id}",
                customer=agent.customer,
                data={"request_id": taken.request_id},
                now=now,
            )
        )
        return _Json(snapshot_json(agent.agent_id, agent.hostname, taken))

    return [Route("/agents/{agent_id}/snapshot", take_snapshot, methods=["POST"])]
