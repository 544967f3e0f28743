"""Group tickets in the store: one ticket for a site outage or a rule tripping on many PCs.

Carries out the decisions of `alerts.grouping.Correlator` inside the caller's transaction
(none commits). A group ticket is an ordinary ticket (delivery routes, escalation,
acknowledgement treat it like any other) with:

- rule `SiteOffline` for a site outage, else the grouped rule's name;
- labels `{site: ...}` for a site outage, `{group: customer}` or `{group: site, site: ...}`
  for a rule group;
- a problem key of its own (customer, no agent, rule, labels), so it is one per site or
  customer whatever PCs it lists; `agent_id` names the first PC, as a ticket needs one;
- `context.group` (how it groups) and `context.pcs` (the PCs, when each started firing).

The PCs' own tickets fold into it: resolved with reason "folded into ticket #N" and
`folded_into` on the event; the group ticket's timeline records which.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, select

from tripline.alerts.engine import AlertKey
from tripline.alerts.grouping import Correlator, Firing, Group, GroupKey, Join, Open, Own, Resolve
from tripline.alerts.model import OFFLINE, Grouping, Rule
from tripline.collector import ticketmodel, tickets
from tripline.collector.schema import tickets as tickets_table

SITE_OFFLINE = "SiteOffline"
# The PCs listed on one group ticket; a group past it still counts them all.
MAX_LISTED_PCS = 200

ContextFor = Callable[[str], dict[str, Any]]


def ticket_rule(rule: Rule) -> str:
    return SITE_OFFLINE if rule.builtin == OFFLINE else rule.name


def ticket_labels(rule: Rule, key: GroupKey) -> tuple[tuple[str, str], ...]:
    _, _, site = key
    if rule.builtin == OFFLINE:
        return (("site", site),)
    if site:
        return (("group", "site"), ("site", site))
    return (("group", "customer"),)


def group_problem_key(rule: Rule, key: GroupKey) -> str:
    return ticketmodel.problem_key(key[1], "", ticket_rule(rule), ticket_labels(rule, key))


def _summary(rule: Rule, key: GroupKey, count: int, total: int) -> str:
    _, customer, site = key
    if rule.builtin == OFFLINE:
        return f"site {site}: {count} of {total} PCs offline — check the link or power"
    where = f"site {site} of {customer}" if site else customer
    return (
        f"{rule.name} on {count} of {total} PCs of {where} at once — "
        "look for what they share (an update, a file server)"
    )


def _runbook(rule: Rule, spec: Grouping) -> str:
    if rule.builtin == OFFLINE:
        return (
            f"These PCs stopped reporting within {spec.within:g}s of each other: check the "
            "site's internet link, router and power before calling anyone. " + (rule.runbook or "")
        ).strip()
    return rule.runbook


def _pc(firing: Firing) -> dict[str, Any]:
    return {
        "agent_id": firing.key.agent_id,
        "hostname": firing.hostname,
        "labels": dict(firing.key.labels),
        "since": firing.since,
        "value": firing.value,
        "summary": firing.summary,
    }


def _context(spec: Grouping, key: GroupKey, pcs: Sequence[Firing], total: int) -> dict[str, Any]:
    return {
        "group": {
            "by": spec.by,
            "customer": key[1],
            "site": key[2],
            "min_agents": spec.min_agents,
            "min_ratio": spec.min_ratio,
            "within": spec.within,
        },
        "pcs": [_pc(f) for f in pcs[:MAX_LISTED_PCS]],
        "pc_count": len({f.key.agent_id for f in pcs}),
        "total_pcs": total,
    }


def pc_names(pcs: Sequence[Firing]) -> str:
    """The PCs by host name; one name held by several PCs (a cloned image) names each
    with its agent id, so three PCs never read as one."""
    found = sorted({(f.hostname, f.key.agent_id) for f in pcs})
    shared = Counter(hostname for hostname, _ in found)
    names = [h if shared[h] == 1 else f"{h} ({agent_id})" for h, agent_id in found]
    listed = ", ".join(names[:20])
    return listed + (f" and {len(names) - 20} more" if len(names) > 20 else "")


def open_group(
    conn: Connection, action: Open, rule: Rule, *, now: float, policy: ticketmodel.TicketPolicy
) -> ticketmodel.TicketChange:
    """Open (or reopen) the group ticket and fold the members' own tickets into it."""
    key = action.key
    members = action.members
    count = len({f.key.agent_id for f in members})
    summary = _summary(rule, key, count, action.total)
    change = tickets.on_alert_firing(
        conn,
        customer=key[1],
        agent_id=members[0].key.agent_id,
        hostname=f"site {key[2]}" if key[2] else key[1],
        rule=ticket_rule(rule),
        labels=ticket_labels(rule, key),
        severity=rule.severity,
        tier=rule.tier,
        summary=summary,
        runbook=_runbook(rule, action.spec),
        value=float(count),
        threshold=float(action.spec.min_agents),
        context=_context(action.spec, key, members, action.total),
        now=now,
        policy=policy,
        key=group_problem_key(rule, key),
    )
    folded = [
        folded_id
        for firing in members
        if (folded_id := _fold(conn, firing, change.ticket_id, summary, now)) is not None
    ]
    message = f"PCs: {pc_names(members)}"
    if folded:
        message += "; folded tickets " + ", ".join(f"#{t}" for t in folded)
    tickets.engine_note(conn, change.ticket_id, message=message, data={"folded": folded}, now=now)
    return change


def _fold(conn: Connection, firing: Firing, group_id: int, summary: str, now: float) -> int | None:
    change = tickets.on_alert_resolved(
        conn,
        customer=firing.customer,
        agent_id=firing.key.agent_id,
        rule=firing.key.rule,
        labels=firing.key.labels,
        value=firing.value,
        reason=f"folded into ticket #{group_id}: {summary}",
        now=now,
        data={"folded_into": group_id},
    )
    return None if change is None else change.ticket_id


def join_group(conn: Connection, action: Join, rule: Rule, group: Group, *, now: float) -> None:
    """Another PC fires while the group is open: listed on the group ticket."""
    pcs = [*group.members.values(), action.firing]
    summary = _summary(rule, action.key, action.count, action.total)
    _fold(conn, action.firing, action.ticket_id, summary, now)
    tickets.engine_note(
        conn,
        action.ticket_id,
        message=f"{action.firing.hostname} too ({action.count} of {action.total} PCs)",
        data={"pc": _pc(action.firing)},
        now=now,
        values={
            "summary": summary,
            "value": float(action.count),
            "context": _context(group.spec, action.key, pcs, action.total),
        },
    )


def resolve_group(
    conn: Connection,
    action: Resolve,
    rule: Rule,
    *,
    now: float,
    policy: ticketmodel.TicketPolicy,
    context_for: ContextFor,
) -> list[ticketmodel.TicketChange]:
    """Resolve the group ticket; members still firing get their own tickets."""
    if action.still:
        reason = (
            f"{len(action.back)} PCs back; still firing, each with its own ticket now: "
            + pc_names(action.still)
        )
    else:
        reason = f"all {len(action.back)} PCs back"
    changes = []
    resolved = tickets.on_alert_resolved(
        conn,
        customer=action.key[1],
        agent_id="",
        rule=ticket_rule(rule),
        labels=ticket_labels(rule, action.key),
        value=float(len(action.still)),
        reason=reason,
        now=now,
        key=group_problem_key(rule, action.key),
        data={"still": [_pc(f) for f in action.still[:MAX_LISTED_PCS]]},
    )
    if resolved is not None:
        changes.append(resolved)
    for firing in action.still:
        changes.append(
            own_ticket(conn, firing, rule, now=now, policy=policy, context_for=context_for)
        )
    return changes


def own_ticket(
    conn: Connection,
    firing: Firing,
    rule: Rule,
    *,
    now: float,
    policy: ticketmodel.TicketPolicy,
    context_for: ContextFor,
) -> ticketmodel.TicketChange:
    """The ticket a PC would have had without the group, opened now."""
    return tickets.on_alert_firing(
        conn,
        customer=firing.customer,
        agent_id=firing.key.agent_id,
        hostname=firing.hostname,
        rule=firing.key.rule,
        labels=firing.key.labels,
        severity=rule.severity,
        tier=rule.tier,
        summary=firing.summary,
        runbook=rule.runbook,
        value=firing.value,
        threshold=None if rule.builtin == OFFLINE else rule.threshold,
        context=context_for(firing.key.agent_id),
        now=now,
        policy=policy,
    )


def apply_own(
    conn: Connection,
    action: Own,
    rule: Rule,
    *,
    now: float,
    policy: ticketmodel.TicketPolicy,
    context_for: ContextFor,
) -> ticketmodel.TicketChange:
    return own_ticket(conn, action.firing, rule, now=now, policy=policy, context_for=context_for)


def restore(conn: Connection, correlator: Correlator, rules: Mapping[str, Rule]) -> int:
    """Put the group tickets still unresolved in the store back into `correlator`'s memory
    after a restart; returns how many. Members count as firing until the caller's alert
    states say otherwise."""
    by_ticket_rule = {ticket_rule(rule): rule for rule in rules.values()}
    rows = conn.execute(
        select(tickets_table).where(
            tickets_table.c.status != "resolved",
            tickets_table.c.rule.in_(sorted(by_ticket_rule)),
            tickets_table.c.hostname.is_not(None),
        )
    ).all()
    restored = 0
    for row in rows:
        context = row.context if isinstance(row.context, dict) else {}
        group = context.get("group")
        rule = by_ticket_rule.get(row.rule)
        if not isinstance(group, dict) or rule is None:
            continue
        spec = correlator.specs.get(rule.name)
        key = correlator.group_key(rule.name, row.customer, str(group.get("site", "")))
        if spec is None or key is None or group_problem_key(rule, key) != row.problem_key:
            continue
        members: dict[AlertKey, Firing] = {}
        for pc in context.get("pcs", []):
            if not isinstance(pc, dict):
                continue
            labels = tuple(sorted((str(k), str(v)) for k, v in (pc.get("labels") or {}).items()))
            alert = AlertKey(str(pc.get("agent_id")), rule.name, labels)
            members[alert] = Firing(
                key=alert,
                customer=row.customer,
                site=key[2],
                hostname=str(pc.get("hostname", "")),
                since=float(pc.get("since", row.opened_at)),
                value=float(pc.get("value", 0.0)),
                summary=str(pc.get("summary", "")),
            )
        correlator.restore_group(Group(key, spec, row.id, row.opened_at, members))
        restored += 1
    return restored
