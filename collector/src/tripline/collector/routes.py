"""Delivery routes: where ticket events go (webhook, e-mail, Alertmanager) and which ones.

Parsed from the collector config's ``routes:`` list; every error names the route and key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

SinkKind = Literal["webhook", "email", "alertmanager"]
EVENT_KINDS = frozenset(
    {"opened", "reopened", "escalated", "acknowledged", "commented", "resolved", "flapping"}
)


class RouteError(ValueError):
    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        super().__init__(f"config key '{key}': {reason}")


@dataclass(frozen=True)
class RouteFilter:
    """Empty tuples match everything."""

    customers: tuple[str, ...] = ()
    severities: tuple[str, ...] = ()
    tiers: tuple[int, ...] = ()
    rules: tuple[str, ...] = ()
    events: tuple[str, ...] = ()

    def matches(self, ticket: Mapping[str, Any], event_kind: str) -> bool:
        return (
            (not self.customers or ticket["customer"] in self.customers)
            and (not self.severities or ticket["severity"] in self.severities)
            and (not self.tiers or int(ticket["tier"]) in self.tiers)
            and (not self.rules or ticket["rule"] in self.rules)
            and (not self.events or event_kind in self.events)
        )


@dataclass(frozen=True)
class Route:
    name: str
    kind: SinkKind
    settings: Mapping[str, Any] = field(default_factory=dict)
    match: RouteFilter = field(default_factory=RouteFilter)

    def __repr__(self) -> str:  # settings hold secrets and passwords
        return f"Route(name={self.name!r}, kind={self.kind!r})"


_REQUIRED: dict[str, tuple[str, ...]] = {
    "webhook": ("url",),
    "email": ("host", "from", "to"),
    "alertmanager": ("url",),
}
_ALLOWED: dict[str, set[str]] = {
    "webhook": {"url", "secret", "timeout"},
    "email": {
        "host",
        "port",
        "starttls",
        "ssl",
        "tls_ca",
        "username",
        "password",
        "from",
        "to",
        "timeout",
    },
    "alertmanager": {"url", "timeout", "resend_interval"},
}


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and all(isinstance(v, (str, int)) for v in value):
        return tuple(str(v) for v in value)
    raise RouteError(key, f"expected a name or a list of names, got {value!r}")


def parse_routes(raw: Any) -> tuple[Route, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RouteError("routes", "expected a list of routes")
    routes: list[Route] = []
    names: set[str] = set()
    for index, item in enumerate(raw):
        where = f"routes[{index}]"
        if not isinstance(item, dict):
            raise RouteError(where, "expected a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise RouteError(f"{where}.name", "every route needs a name")
        if name in names:
            raise RouteError(f"{where}.name", f"duplicate route name {name!r}")
        names.add(name)
        kinds = [k for k in _REQUIRED if k in item]
        if len(kinds) != 1:
            raise RouteError(where, "give exactly one of webhook, email, alertmanager")
        kind = kinds[0]
        unknown = set(item) - {"name", "match", kind}
        if unknown:
            raise RouteError(where, f"unknown keys {sorted(unknown)}")
        settings = item[kind]
        if not isinstance(settings, dict):
            raise RouteError(f"{where}.{kind}", "expected a mapping")
        for key in _REQUIRED[kind]:
            if not settings.get(key):
                raise RouteError(f"{where}.{kind}.{key}", "required")
        unknown = set(settings) - _ALLOWED[kind]
        if unknown:
            raise RouteError(f"{where}.{kind}", f"unknown keys {sorted(unknown)}")
        if kind == "email":
            settings = {**settings, "to": _strings(settings["to"], f"{where}.email.to")}
        routes.append(
            Route(
                name=name,
                kind=kind,  # type: ignore[arg-type]
                settings=settings,
                match=_parse_filter(item.get("match") or {}, f"{where}.match"),
            )
        )
    return tuple(routes)


def _parse_filter(raw: Any, where: str) -> RouteFilter:
    if not isinstance(raw, dict):
        raise RouteError(where, "expected a mapping")
    unknown = set(raw) - {"customers", "severities", "tiers", "rules", "events"}
    if unknown:
        raise RouteError(where, f"unknown keys {sorted(unknown)}")
    tiers: tuple[int, ...] = ()
    if "tiers" in raw:
        try:
            tiers = tuple(int(t) for t in _strings(raw["tiers"], f"{where}.tiers"))
        except ValueError:
            raise RouteError(f"{where}.tiers", "tiers are 1, 2 or 3") from None
    events = _strings(raw.get("events", ()), f"{where}.events")
    bad = set(events) - EVENT_KINDS
    if bad:
        raise RouteError(f"{where}.events", f"unknown event kinds {sorted(bad)}")
    return RouteFilter(
        customers=_strings(raw.get("customers", ()), f"{where}.customers"),
        severities=_strings(raw.get("severities", ()), f"{where}.severities"),
        tiers=tiers,
        rules=_strings(raw.get("rules", ()), f"{where}.rules"),
        events=events,
    )
