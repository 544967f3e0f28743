"""POST /agents/{agent_id}/snapshot: an operator asks a PC what is happening now.

The collector asks the agent over its open stream and waits at most
``snapshot_timeout`` for the answer. Scoped like every agent route (an agent outside the
token's customers is "not found"); answered 504 when the agent has no stream to this
collector or does not answer in time, 429 when it was asked moments ago and no answer
is at hand. Read-only on the PC; recorded in the audit log.
"""

from __future__ import annotations

import math
from typing import Any

from starlette.responses import Response

from tripline.collector import agents_store, apitokens
from tripline.collector.agents_store import AgentNotFound
from tripline.collector.api.agents import AGENT_ID
from tripline.collector.api.body import Body
from tripline.collector.api.encoding import Json
from tripline.collector.api.errors import ApiError
from tripline.collector.api.jsonschema import obj, ref
from tripline.collector.api.routing import Call, operation
from tripline.collector.snapshots import SnapshotUnavailable, TakenSnapshot


def snapshot_json(agent_id: str, hostname: str, taken: TakenSnapshot) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "hostname": hostname,
        "request_id": taken.request_id,
        "taken_at": taken.taken_at,
        "snapshot": taken.data,
    }


@operation(
    "POST",
    "/agents/{agent_id}/snapshot",
    "snapshotAgent",
    "Ask the agent now for a diagnostic snapshot (processes, disks, users); "
    "waits up to snapshot_timeout",
    ref("AgentSnapshot"),
    path_params=(AGENT_ID,),
    body=Body(),
    errors=(404, 409, 429, 504),
)
async def take_snapshot(call: Call) -> Response:
    await call.body()
    agent_id = call.path("agent_id")
    token, ctx = call.token, call.ctx
    agent = await ctx.read(lambda conn: agents_store.get_agent(conn, agent_id))
    if agent is None or not token.allows(agent.customer):
        raise AgentNotFound(agent_id)
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
    await ctx.write(
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
    return Json(snapshot_json(agent.agent_id, agent.hostname, taken))


OPERATIONS = (take_snapshot,)

SCHEMAS = {
    "AgentSnapshot": obj(
        ("agent_id", "hostname", "request_id", "taken_at", "snapshot"),
        agent_id={"type": "string"},
        hostname={"type": "string"},
        request_id={"type": "string"},
        taken_at={"type": "number", "description": "when the collector received it"},
        snapshot={"type": "object"},
    )
}
