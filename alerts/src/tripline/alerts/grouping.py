"""Correlated problems: when one alert fires on many PCs at once, one group ticket.

A site losing its internet link or power takes all its PCs offline within a minute or
two; a bad update trips one rule on many PCs of a customer. `Correlator` watches the
alerts of the rules that group (the built-in offline rule by site, rules with a `group`
option by customer or site) and decides, as a pure function of what fired and `now`:

- **open** a group when at least `min_agents` PCs, and at least `min_ratio` of the
  group's PCs, started firing within the last `within` seconds; their own tickets (the
  first ones opened before the group qualified) fold into the group ticket;
- **join**: while the group is open and none of its PCs is back, another PC firing joins
  it instead of opening its own ticket (`should_absorb` tells the caller so);
- **resolve** when every member is back, or `within` after the first one came back (the
  link is up again): members still firing then get their own tickets.

It holds memory only; the caller commits each action (see collector/grouptickets.py) and
reports the outcome back (`opened`, `joined`, `resolved`, `owned`) only once committed.
Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from tripline.alerts.engine import AlertKey
from tripline.alerts.model import Grouping

# (rule name, customer, site); site is "" for a group by customer
GroupKey = tuple[str, str, str]


@dataclass(frozen=True)
class Firing:
    """One alert firing on one PC, as its firing transition said."""

    key: AlertKey
    customer: str
    site: str
    hostname: str
    since: float
    value: float
    summary: str


@dataclass
class Group:
    key: GroupKey
    spec: Grouping
    ticket_id: int
    opened_at: float
    members: dict[AlertKey, Firing]
    back: dict[AlertKey, float] = field(default_factory=dict)  # member -> back since

    @property
    def back_since(self) -> float | None:
        return min(self.back.values()) if self.back else None

    def still_firing(self) -> list[Firing]:
        return [f for key, f in self.members.items() if key not in self.back]


@dataclass(frozen=True)
class Open:
    key: GroupKey
    spec: Grouping
    members: tuple[Firing, ...]
    total: int  # PCs of the customer (or site) the group is out of


@dataclass(frozen=True)
class Join:
    key: GroupKey
    ticket_id: int
    firing: Firing
    count: int  # PCs in the group with this one
    total: int


@dataclass(frozen=True)
class Resolve:
    key: GroupKey
    ticket_id: int
    back: tuple[Firing, ...]
    still: tuple[Firing, ...]  # each gets its own ticket


@dataclass(frozen=True)
class Own:
    """An alert held for a group that never formed (its opening failed): own ticket."""

    firing: Firing


Action = Open | Join | Resolve | Own
# how many PCs the customer (site "") or the customer's site has
Population = Callable[[str, str], int]


class Correlator:
    def __init__(self, specs: Mapping[str, Grouping]) -> None:
        self.specs = dict(specs)  # rule name -> how its alerts group
        self.firing: dict[AlertKey, Firing] = {}
        self.groups: dict[GroupKey, Group] = {}
        # firing alerts that opened no ticket of their own because a group takes them
        self.absorbed: set[AlertKey] = set()

    def set_specs(self, specs: Mapping[str, Grouping]) -> None:
        """A new rule set: alerts of rules that no longer group are forgotten here (their
        open groups still resolve as their members come back)."""
        self.specs = dict(specs)
        self.firing = {k: f for k, f in self.firing.items() if k.rule in self.specs}

    def group_key(self, rule: str, customer: str, site: str) -> GroupKey | None:
        spec = self.specs.get(rule)
        if spec is None:
            return None
        return (rule, customer, site if spec.by == "site" else "")

    # -- fed by the caller after each commit -----------------------------------------------

    def fired(self, firing: Firing, *, absorbed: bool) -> None:
        if firing.key.rule not in self.specs:
            return
        self.firing[firing.key] = firing
        if absorbed:
            self.absorbed.add(firing.key)

    def cleared(self, key: AlertKey) -> None:
        self.firing.pop(key, None)
        self.absorbed.discard(key)

    def forget_agent(self, agent_id: str) -> None:
        for key in [k for k in self.firing if k.agent_id == agent_id]:
            self.cleared(key)

    # -- decisions ------------------------------------------------------------------------

    def should_absorb(self, firing: Firing, population: Population, now: float) -> bool:
        """Whether this new firing alert should open no ticket of its own: a group open
        and not recovering takes it, or it completes a group that opens now."""
        gk = self.group_key(firing.key.rule, firing.customer, firing.site)
        if gk is None:
            return False
        group = self.groups.get(gk)
        if group is not None:
            return group.back_since is None
        others = [f for k, f in self.firing.items() if k != firing.key]
        return self._qualifies(gk, [*others, firing], population, now) is not None

    def plan(self, now: float, population: Population) -> list[Action]:
        """What to commit now, groups in key order, so two runs over the same state agree."""
        actions: list[Action] = []
        by_group: dict[GroupKey, list[Firing]] = {}
        for firing in self.firing.values():
            gk = self.group_key(firing.key.rule, firing.customer, firing.site)
            if gk is not None:
                by_group.setdefault(gk, []).append(firing)
        taken: set[AlertKey] = set()
        for gk in sorted(set(by_group) | set(self.groups)):
            group = self.groups.get(gk)
            candidates = by_group.get(gk, [])
            if group is None:
                members = self._qualifies(gk, candidates, population, now)
                if members is not None:
                    actions.append(Open(gk, self.specs[gk[0]], members, population(gk[1], gk[2])))
                    taken.update(f.key for f in members)
                continue
            taken.update(group.members)
            actions.extend(self._follow(group, candidates, population, now))
        for key in sorted(self.absorbed - taken, key=_order_key):
            orphan = self.firing.get(key)
            if orphan is None:
                continue
            gk = self.group_key(key.rule, orphan.customer, orphan.site)
            group = self.groups.get(gk) if gk is not None else None
            if group is None or group.back_since is not None:
                actions.append(Own(orphan))
        return actions

    def _qualifies(
        self, gk: GroupKey, candidates: Iterable[Firing], population: Population, now: float
    ) -> tuple[Firing, ...] | None:
        spec = self.specs[gk[0]]
        recent = sorted(
            (
                f
                for f in candidates
                if f.since >= now - spec.within
                and self.group_key(f.key.rule, f.customer, f.site) == gk
            ),
            key=lambda f: (f.since, _order_key(f.key)),
        )
        agents = {f.key.agent_id for f in recent}
        total = population(gk[1], gk[2])
        if len(agents) < spec.min_agents or len(agents) < spec.min_ratio * total:
            return None
        return tuple(recent)

    def _follow(
        self, group: Group, candidates: list[Firing], population: Population, now: float
    ) -> list[Action]:
        out: list[Action] = []
        for key in group.members:
            if key not in self.firing and key not in group.back:
                group.back[key] = now  # memory only: a restart counts them back from then
        if group.back_since is None:
            joining = sorted(
                (f for f in candidates if f.key not in group.members),
                key=lambda f: (f.since, _order_key(f.key)),
            )
            count = len({k.agent_id for k in group.members})
            total = population(group.key[1], group.key[2])
            for firing in joining:
                if firing.since < group.opened_at - group.spec.within:
                    continue  # firing since long before: a problem of its own
                if firing.key.agent_id not in {k.agent_id for k in group.members}:
                    count += 1
                out.append(Join(group.key, group.ticket_id, firing, count, total))
        still = group.still_firing()
        back_since = group.back_since
        if not still or (back_since is not None and now - back_since >= group.spec.within):
            back = tuple(group.members[k] for k in sorted(group.back, key=_order_key))
            out.append(Resolve(group.key, group.ticket_id, back, tuple(still)))
        return out

    # -- outcomes, once committed -----------------------------------------------------------

    def opened(self, action: Open, ticket_id: int, now: float) -> None:
        members = {f.key: f for f in action.members}
        self.groups[action.key] = Group(action.key, action.spec, ticket_id, now, members)
        self.absorbed -= set(members)

    def joined(self, action: Join) -> None:
        group = self.groups.get(action.key)
        if group is not None:
            group.members[action.firing.key] = action.firing
        self.absorbed.discard(action.firing.key)

    def resolved(self, action: Resolve) -> None:
        self.groups.pop(action.key, None)

    def owned(self, action: Own) -> None:
        self.absorbed.discard(action.firing.key)

    def restore_group(self, group: Group) -> None:
        """A group ticket still open in the store after a restart."""
        self.groups[group.key] = group


def _order_key(key: AlertKey) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    return (key.agent_id, key.rule, key.labels)
