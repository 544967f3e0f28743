"""/agents: list, show (inventory and latest values), revoke."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from starlette.responses import Response

from tripline.collector import agents_store, apitokens
from tripline.collector.agents_store import AgentNotFound, AgentRecord
from tripline.collector.api.body import Body
from tripline.collector.api.context import ApiContext
from tripline.collector.api.encoding import Json
from tripline.collector.api.jsonschema import array_of, obj, or_null, page_of, ref
from tripline.collector.api.params import CUSTOMER, PAGING, Text, page
from tripline.collector.api.routing import Call, operation

AGENT_ID = Text(
    name="agent_id",
    where="path",
    min_length=1,
    max_length=64,
    pattern="^[^/\\u0000]+$",
    label="agent id",
    description="agent id",
)


def agent_json(ctx: ApiContext, agent: AgentRecord, *, detail: bool = False) -> dict[str, Any]:
    live = ctx.pipeline.state.agents.get(agent.agent_id)
    out: dict[str, Any] = {
        "agent_id": agent.agent_id,
        "customer": agent.customer,
        "hostname": agent.hostname,
        "site": agent.site,
        "tags": agent.tags,
        "created_at": agent.created_at,
        "last_seen_at": agent.last_seen_at,
        "revoked_at": agent.revoked_at,
        "up": live is not None and ctx.pipeline.is_up(live),
    }
    if detail:
        values = [] if live is None else sorted(live.latest())
        out["inventory"] = agent.inventory
        out["values"] = [
            {"metric": name, "labels": dict(labels), "value": value}
            for name, labels, value in values
        ]
    return out


@operation(
    "GET",
    "/agents",
    "listAgents",
    "Enrolled agents",
    ref("AgentPage"),
    query=(*PAGING, CUSTOMER, Text(name="site")),
    errors=(403,),
)
async def list_agents(call: Call) -> Response:
    q, token, ctx = call.query, call.token, call.ctx
    limit, offset, customer, site = q["limit"], q["offset"], q["customer"], q["site"]
    agents = await ctx.read(lambda conn: agents_store.list_agents(conn, customer))
    visible = [a for a in agents if token.allows(a.customer) and (site is None or a.site == site)]
    found = visible[offset : offset + limit + 1]
    return Json(page([agent_json(ctx, a) for a in found], limit, offset))


@operation(
    "GET",
    "/agents/{agent_id}",
    "showAgent",
    "An agent with its inventory and latest values",
    ref("AgentDetail"),
    path_params=(AGENT_ID,),
    errors=(404,),
)
async def show_agent(call: Call) -> Response:
    ctx = call.ctx
    agent_id = call.path("agent_id")
    agent = await ctx.read(lambda conn: agents_store.get_agent(conn, agent_id))
    if agent is None or not call.token.allows(agent.customer):
        raise AgentNotFound(agent_id)
    return Json(agent_json(ctx, agent, detail=True))


@operation(
    "POST",
    "/agents/{agent_id}/revoke",
    "revokeAgent",
    "Revoke the agent's credential; it is refused on its next message",
    ref("Agent"),
    path_params=(AGENT_ID,),
    body=Body(),
    errors=(404,),
)
async def revoke_agent(call: Call) -> Response:
    await call.body()
    agent_id = call.path("agent_id")
    token, ctx = call.token, call.ctx
    now = ctx.clock()

    def work(conn: Connection) -> AgentRecord:
        agent = agents_store.get_agent(conn, agent_id)
        if agent is None or not token.allows(agent.customer):
            raise AgentNotFound(agent_id)
        if agent.revoked_at is None:
            agents_store.revoke_agent(conn, agent_id, now)
            apitokens.record(
                conn,
                actor=token.name,
                action="agent.revoke",
                target=f"agent/{agent_id}",
                customer=agent.customer,
                data={"hostname": agent.hostname},
                now=now,
            )
        revoked = agents_store.get_agent(conn, agent_id)
        assert revoked is not None
        return revoked

    revoked = await ctx.write(work)
    await ctx.pipeline.retire(agent_id, now)
    return Json(agent_json(ctx, revoked))


OPERATIONS = (list_agents, show_agent, revoke_agent)


def _schemas() -> dict[str, Any]:
    text = {"type": "string"}
    when = or_null("number")
    labels = {"type": "object", "additionalProperties": {"type": "string"}}
    agent = obj(
        ("agent_id", "customer", "hostname", "site", "up"),
        agent_id=text,
        customer=text,
        hostname=text,
        site=text,
        tags={"type": "object"},
        created_at={"type": "number"},
        last_seen_at=when,
        revoked_at=when,
        up={"type": "boolean"},
    )
    value = obj(("metric", "labels", "value"), metric=text, labels=labels, value=when)
    detail = obj(("inventory", "values"), inventory={"type": "object"}, values=array_of(value))
    return {
        "Agent": agent,
        "AgentDetail": {"allOf": [ref("Agent"), detail]},
        "AgentPage": page_of("Agent"),
    }


SCHEMAS = _schemas()
