"""alerts/grouping.py: which alerts make one group ticket, as a pure function of what fired
and the time; and the rule file's `group` option."""

from __future__ import annotations

import pytest

from tripline.alerts.engine import AlertKey
from tripline.alerts.grouping import Correlator, Firing, Join, Open, Own, Resolve
from tripline.alerts.model import Grouping
from tripline.alerts.rules import RuleFileError, parse_rules

T0 = 1_700_000_000.0
SITE = Grouping(by="site", min_agents=3, within=120.0, min_ratio=0.5)


def firing(agent: str, since: float, *, site: str = "hq", rule: str = "AgentOffline") -> Firing:
    return Firing(AlertKey(agent, rule, ()), "acme", site, agent, since, 40.0, f"{agent} down")


def population(counts: dict[tuple[str, str], int]):  # type: ignore[no-untyped-def]
    return lambda customer, site: counts.get((customer, site), 0)


FIVE = population({("acme", "hq"): 5, ("acme", ""): 5})


def correlator(*fired: Firing, spec: Grouping = SITE) -> Correlator:
    c = Correlator({"AgentOffline": spec})
    for f in fired:
        c.fired(f, absorbed=False)
    return c


@pytest.mark.parametrize(
    ("offsets", "pcs", "opens"),
    [
        ((0, 10, 20), 5, True),  # 3 of 5 within 2m
        ((0, 10), 5, False),  # 2 PCs are no outage
        ((0, 10, 20), 7, False),  # 3 of 7 is under half
        ((0, 10, 20, 30), 7, True),  # 4 of 7
        ((0, 60, 121), 5, False),  # the first went 121s before now: too long ago
        ((1, 60, 121), 5, True),  # 120s apart: within
    ],
)
def test_a_group_opens_at_min_agents_and_min_ratio_within_the_window(
    offsets: tuple[float, ...], pcs: int, opens: bool
) -> None:
    c = correlator(*(firing(f"pc-{i}", T0 + o) for i, o in enumerate(offsets)))
    now = T0 + max(offsets)
    actions = c.plan(now, population({("acme", "hq"): pcs}))
    assert [type(a) for a in actions] == ([Open] if opens else [])
    if opens:
        [action] = actions
        assert isinstance(action, Open)
        assert action.key == ("AgentOffline", "acme", "hq")
        assert action.total == pcs


def test_sites_and_customers_group_apart() -> None:
    c = correlator(firing("a", T0), firing("b", T0), firing("c", T0, site="branch"))
    counts = population({("acme", "hq"): 2, ("acme", "branch"): 1})
    assert c.plan(T0, counts) == []


def test_by_customer_groups_across_sites() -> None:
    spec = Grouping(by="customer", min_agents=3, within=300.0)
    c = correlator(firing("a", T0), firing("b", T0), firing("c", T0, site="branch"), spec=spec)
    [action] = c.plan(T0, population({("acme", ""): 10}))
    assert isinstance(action, Open) and action.key == ("AgentOffline", "acme", "")


def test_should_absorb_the_firing_that_completes_a_group_and_later_ones() -> None:
    c = correlator(firing("a", T0), firing("b", T0 + 5))
    third = firing("c", T0 + 10)
    assert c.should_absorb(third, FIVE, T0 + 10)
    assert not correlator(firing("a", T0)).should_absorb(firing("b", T0 + 1), FIVE, T0 + 1)
    c.fired(third, absorbed=True)
    [action] = c.plan(T0 + 10, FIVE)
    assert isinstance(action, Open)
    c.opened(action, ticket_id=7, now=T0 + 10)
    assert c.absorbed == set()
    late = firing("d", T0 + 300)  # long after: the site is still dark, it joins
    assert c.should_absorb(late, FIVE, T0 + 300)
    c.fired(late, absorbed=True)
    [join] = c.plan(T0 + 300, FIVE)
    assert join == Join(("AgentOffline", "acme", "hq"), 7, late, 4, 5)


def open_group(c: Correlator, now: float) -> None:
    [action] = c.plan(now, FIVE)
    assert isinstance(action, Open)
    c.opened(action, ticket_id=7, now=now)


def test_resolves_when_all_are_back() -> None:
    c = correlator(firing("a", T0), firing("b", T0), firing("c", T0))
    open_group(c, T0)
    for agent in ("a", "b", "c"):
        c.cleared(AlertKey(agent, "AgentOffline", ()))
    [action] = c.plan(T0 + 60, FIVE)
    assert isinstance(action, Resolve)
    assert (len(action.back), action.still) == (3, ())


def test_stragglers_get_their_own_ticket_within_after_the_first_is_back() -> None:
    c = correlator(firing("a", T0), firing("b", T0), firing("c", T0))
    open_group(c, T0)
    c.cleared(AlertKey("a", "AgentOffline", ()))
    assert c.plan(T0 + 60, FIVE) == []  # a is back from now
    assert c.plan(T0 + 179, FIVE) == []
    # a PC going dark while the site recovers is a problem of its own
    assert not c.should_absorb(firing("d", T0 + 100), FIVE, T0 + 100)
    [action] = c.plan(T0 + 180, FIVE)
    assert isinstance(action, Resolve)
    assert [f.key.agent_id for f in action.still] == ["b", "c"]
    c.resolved(action)
    assert c.groups == {}


def test_an_absorbed_alert_whose_group_never_formed_gets_its_own_ticket() -> None:
    c = correlator()
    orphan = firing("a", T0)
    c.fired(orphan, absorbed=True)  # the group's opening failed to commit, say
    assert c.plan(T0, FIVE) == [Own(orphan)]
    c.owned(Own(orphan))
    assert c.plan(T0, FIVE) == []


def test_rules_that_do_not_group_are_ignored() -> None:
    c = correlator()
    c.fired(firing("a", T0, rule="DiskFull"), absorbed=False)
    assert c.firing == {}
    assert not c.should_absorb(firing("b", T0, rule="DiskFull"), FIVE, T0)


RULE = """\
rules:
  - name: DiskFull
    metric: filesystem_used_ratio
    op: ">"
    threshold: 0.9
    summary: "{host} full"
    group: %s
"""


def test_rule_group_option_parses() -> None:
    rules = parse_rules(RULE % "{by: site, min_agents: 4, within: 5m, min_ratio: 0.25}", "r.yaml")
    assert rules.rules[0].group == Grouping(by="site", min_agents=4, within=300.0, min_ratio=0.25)
    assert parse_rules(RULE % "{by: customer, min_agents: 2, within: 1m}", "r.yaml").rules[
        0
    ].group == Grouping(by="customer", min_agents=2, within=60.0)


@pytest.mark.parametrize(
    ("group", "errors"),
    [
        ("5", ["field 'group': expected a mapping (by, min_agents, within, min_ratio), got 5"]),
        (
            "{by: office, min_agents: 3, within: 5m}",
            ["field 'group.by': expected one of customer, site, got 'office'"],
        ),
        (
            "{by: customer, within: 5m}",
            ["field 'group.min_agents': missing required field"],
        ),
        (
            "{by: customer, min_agents: 1, within: 5m}",
            ["field 'group.min_agents': expected a whole number of PCs from 2 to 100000, got 1"],
        ),
        (
            "{by: customer, min_agents: 2.5, within: 5m}",
            ["field 'group.min_agents': expected a whole number of PCs from 2 to 100000, got 2.5"],
        ),
        (
            "{by: customer, min_agents: 3, within: 2h}",
            ["field 'group.within': must be longer than 0s and at most 1h, got 7200s"],
        ),
        (
            "{by: customer, min_agents: 3, within: 5m, min_ratio: 2}",
            ["field 'group.min_ratio': expected a share of the PCs from 0 to 1, got 2"],
        ),
        (
            "{by: customer, min_agent: 3, within: 5m}",
            [
                "field 'group.min_agent': unknown field (did you mean 'min_agents'?)",
                "field 'group.min_agents': missing required field",
            ],
        ),
    ],
)
def test_rule_group_option_is_validated_strictly(group: str, errors: list[str]) -> None:
    with pytest.raises(RuleFileError) as caught:
        parse_rules(RULE % group, "r.yaml")
    assert [str(e) for e in caught.value.errors] == [
        f"r.yaml: rule #1 'DiskFull': {error}" for error in errors
    ]
