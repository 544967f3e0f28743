"""/rules (the rules loaded) and /alerts (pending and firing, from the pipeline's memory)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.responses import Response

from tripline.alerts.rules import Rule
from tripline.collector.api.encoding import Json
from tripline.collector.api.jsonschema import array_of, obj, or_null, page_of, ref
from tripline.collector.api.params import CUSTOMER, PAGING, Choice, Text, page
from tripline.collector.api.routing import Call, operation
from tripline.collector.apitokens import ApiToken

ALERT_PHASES = ("pending", "firing")


def rule_json(rule: Rule, token: ApiToken) -> dict[str, Any]:
    overrides = {
        customer: {k: v for k, v in asdict(o).items() if v is not None}
        for customer, o in sorted(rule.overrides.items())
        if token.allows(customer)
    }
    return {
        "name": rule.name,
        "metric": rule.metric,
        "match": [asdict(m) for m in rule.matchers],
        "op": rule.op,
        "threshold": rule.threshold,
        "for": rule.for_seconds,
        "clear": {"threshold": rule.clear_threshold, "for": rule.clear_for_seconds},
        "window": None if rule.window is None else asdict(rule.window),
        "severity": rule.severity,
        "tier": rule.tier,
        "summary": rule.summary,
        "runbook": rule.runbook,
        "builtin": rule.builtin,
        "overrides": overrides,
    }


@operation(
    "GET",
    "/rules",
    "listRules",
    "The rules loaded",
    obj(("source", "items"), source={"type": "string"}, items=array_of(ref("Rule"))),
)
async def list_rules(call: Call) -> Response:
    rules = call.ctx.pipeline.rules
    return Json({"source": rules.source, "items": [rule_json(r, call.token) for r in rules.rules]})


@operation(
    "GET",
    "/alerts",
    "listAlerts",
    "Alerts pending (waiting out their 'for') and firing",
    ref("AlertPage"),
    query=(
        *PAGING,
        Choice(name="phase", choices=ALERT_PHASES),
        CUSTOMER,
        Text(name="agent_id"),
        Text(name="rule"),
    ),
    errors=(403,),
)
async def list_alerts(call: Call) -> Response:
    q, token, pipeline = call.query, call.token, call.ctx.pipeline
    limit, offset, phase = q["limit"], q["offset"], q["phase"]
    customer, agent_id, rule = q["customer"], q["agent_id"], q["rule"]
    agents = pipeline.state.agents
    found = []
    # Copied first: the pipeline replaces an agent's states while this loop runs.
    for aid, states in list(pipeline.alert_states.items()):
        live = agents.get(aid)
        if live is None or not token.allows(live.customer):
            continue
        if (customer is not None and live.customer != customer) or (
            agent_id is not None and aid != agent_id
        ):
            continue
        for key, state in states.items():
            if (rule is not None and key.rule != rule) or (
                phase is not None and state.phase != phase
            ):
                continue
            found.append(
                {
                    "agent_id": aid,
                    "customer": live.customer,
                    "hostname": live.hostname,
                    "rule": key.rule,
                    "labels": dict(key.labels),
                    "phase": state.phase,
                    "active_since": state.active_since,
                    "firing_since": state.firing_since,
                    "value": state.value,
                }
            )
    found.sort(key=lambda a: (a["customer"], a["hostname"], a["agent_id"], a["rule"]))
    return Json(page(found[offset : offset + limit + 1], limit, offset))


OPERATIONS = (list_rules, list_alerts)


def _schemas() -> dict[str, Any]:
    number = {"type": "number"}
    text = {"type": "string"}
    when = or_null("number")
    rule = obj(
        ("name", "metric", "op", "threshold", "for", "severity", "tier"),
        name=text,
        metric=text,
        match=array_of({"type": "object"}),
        op=text,
        threshold=number,
        clear={"type": "object"},
        window={"type": ["object", "null"]},
        severity=text,
        tier={"type": "integer"},
        summary=text,
        runbook=text,
        builtin=or_null("string"),
        overrides={"type": "object", "description": "per customer, inside the token's scope"},
        **{"for": {**number, "description": "seconds the condition must hold"}},
    )
    alert = obj(
        ("agent_id", "customer", "rule", "labels", "phase"),
        agent_id=text,
        customer=text,
        hostname=text,
        rule=text,
        labels={"type": "object", "additionalProperties": {"type": "string"}},
        phase={"enum": list(ALERT_PHASES)},
        active_since=number,
        firing_since=when,
        value=when,
    )
    return {"Rule": rule, "Alert": alert, "AlertPage": page_of("Alert")}


SCHEMAS = _schemas()
