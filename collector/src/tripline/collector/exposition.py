"""Prometheus exposition of every agent's series, prepared as each report arrives.

The collector owns the metric namespace (:mod:`collector.catalogue`): a core metric
``<name>`` is exposed as ``tripline_<name>`` with its catalogue type and help; any other
name is an extra, exposed untyped as ``tripline_x_<name>``, so no agent can change a
family's type or shadow another family. Every series carries the target labels
``agent_id``, ``host``, ``customer`` and ``site``; the edge (:mod:`collector.convert`)
refuses agent labels of those names (and ``job``, ``instance``, ``exported_*``), so a
series never holds two labels of one name. Label values are escaped as the text format
requires. Each agent's text is bounded (``max_bytes_per_agent``). promtool check
metrics and a real Prometheus are part of the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

from tripline.collector.state import AgentLive, LiveState
from tripline.common import catalogue
from tripline.common.catalogue import TARGET_LABELS
from tripline.common.labels import Labels

__all__ = ["TARGET_LABELS", "SeriesExposition", "escape_label_value", "exposed_name"]

# Written by the collector for every agent; neither core names nor extras can reach them.
OWN_FAMILIES = frozenset(
    {
        "tripline_agent_up",
        "tripline_agent_last_report_timestamp_seconds",
        "tripline_agent_spool_dropped_reports_total",
    }
)
# Per agent: a normal PC renders about 15 KiB; a hostile one is cut here.
DEFAULT_MAX_BYTES_PER_AGENT = 256 * 1024


def escape_label_value(value: str) -> str:
    """Text-format escaping: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labelset(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)


# Hostnames and sites are escaped at the edge; rows stored before that was so (or by
# another path) are escaped here too, once per agent, so no control character reaches
# a scraper or a terminal showing the page.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def _target(key: tuple[str, str, str, str]) -> str:
    return _labelset(
        (name, value.translate(_CONTROLS)) for name, value in zip(TARGET_LABELS, key, strict=True)
    )


class _AgentLines:
    """One agent's rendered text: its series grouped by exposed family.

    Rebuilt as a whole after each report and swapped in by reference, so a scrape can
    join the pieces without copying or locking. Only the text is the agent's own: family
    names, headers and escaped label sets are shared by every agent (see
    :class:`SeriesExposition`), so an agent costs its text and little more.
    """

    __slots__ = ("chunks", "target", "target_key")

    def __init__(self, target_key: tuple[str, str, str, str]) -> None:
        self.target_key = target_key
        self.target = _target(target_key)
        # exposed family -> (its header, shared by all agents; the agent's lines of it)
        self.chunks: dict[str, tuple[str, str]] = {}


# Entries in each of the shared maps below before it starts over. Sharing is only an
# economy (a missing entry is rebuilt, a dropped one stays valid wherever it is used),
# so an agent inventing names or label values can cost at most this, never grow them.
SHARED_MAX = 65_536


class SeriesExposition:
    """Every agent's series as Prometheus text, rendered incrementally.

    :meth:`update` renders one agent's lines when its report is applied; a scrape
    (:meth:`render`) only joins the prepared pieces and adds the per-agent liveness
    families, so its cost grows with the bytes served, not with formatting work.
    ``is_up(live)`` is the liveness the alerts engine uses, so a dashboard and a ticket
    never disagree about an agent; an agent that is not up exposes only its liveness.

    Family types and help come from the catalogue, never from which agent spoke first,
    and nothing is kept per family name ever seen: a family no agent sends any more
    leaves the page (and memory) with the last agent's next report.
    """

    def __init__(
        self,
        state: LiveState,
        is_up: Callable[[AgentLive], bool],
        max_bytes_per_agent: int = DEFAULT_MAX_BYTES_PER_AGENT,
        on_truncated: Callable[[AgentLive, int], None] = lambda live, left_out: None,
    ) -> None:
        self._state = state
        self._is_up = is_up
        self._agents: dict[str, _AgentLines] = {}
        # Shared by every agent, so a series costs its agent only its line of text:
        # agent metric name -> (exposed family, its header), None: not exposed;
        # labels -> ',name="escaped value",...' ("" for none), None: not exposed.
        self._families: dict[str, tuple[str, str] | None] = {}
        self._labelsets: dict[Labels, str | None] = {}
        self.max_bytes_per_agent = max_bytes_per_agent
        # called with the number of series left out when an agent's text is over its bound
        self.on_truncated = on_truncated

    def update(
        self, live: AgentLive, samples: Sequence[tuple[str, Labels, float]] | None = None
    ) -> int:
        """Render the agent's current series; ``samples`` (its latest report) saves a lookup.

        Returns how many series were left out because the agent's text would pass
        ``max_bytes_per_agent`` (series are taken in the order the agent sent them).
        """
        key = (live.agent_id, live.hostname, live.customer, live.site)
        lines = self._agents.get(live.agent_id)
        if lines is None or lines.target_key != key:
            lines = _AgentLines(key)
        series = live.latest() if samples is None else samples
        grouped: dict[str, list[str]] = {}
        headers: dict[str, str] = {}
        for family, header, line in self._lines(lines.target, series):
            parts = grouped.get(family)
            if parts is None:
                parts = grouped[family] = []
                headers[family] = header
            parts.append(line)
        chunks = {family: (headers[family], "".join(parts)) for family, parts in grouped.items()}
        left_out = 0
        # Measured after joining, so a report within the bound (all normal agents) costs
        # one len() per family; only an agent over it pays for the cut.
        if sum(len(h) + len(t) for h, t in chunks.values()) > self.max_bytes_per_agent:
            chunks, left_out = self._cut(
                lines, live.latest() if samples is None else samples, headers
            )
        lines.chunks = chunks
        self._agents[live.agent_id] = lines
        if left_out:
            self.on_truncated(live, left_out)
        return left_out

    def _lines(
        self, target: str, samples: Iterable[tuple[str, Labels, float]]
    ) -> Iterator[tuple[str, str, str]]:
        """(family, header, line) of each exposed sample, in the order given."""
        families = self._families
        labelsets = self._labelsets
        for name, labels, value in samples:
            family = families.get(name, _UNKNOWN)
            if family is _UNKNOWN:
                family = self._family(name)
            if family is None:
                continue
            extra = labelsets.get(labels, _UNKNOWN_LABELS)
            if extra is _UNKNOWN_LABELS:
                extra = self._labelset(labels)
            if extra is None:
                continue
            exposed, header = family
            yield exposed, header, f"{exposed}{{{target}{extra}}} {value!r}\n"

    def _cut(
        self,
        lines: _AgentLines,
        samples: Iterable[tuple[str, Labels, float]],
        headers: dict[str, str],
    ) -> tuple[dict[str, tuple[str, str]], int]:
        """The agent's series up to ``max_bytes_per_agent``, in the order it sent them."""
        budget = self.max_bytes_per_agent
        grouped: dict[str, list[str]] = {}
        left_out = 0
        for family, _, line in self._lines(lines.target, samples):
            cost = len(line) + (0 if family in grouped else len(headers[family]))
            if cost > budget:
                left_out += 1
                continue
            budget -= cost
            grouped.setdefault(family, []).append(line)
        chunks = {family: (headers[family], "".join(parts)) for family, parts in grouped.items()}
        return chunks, left_out

    def forget(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)

    def _family(self, name: str) -> tuple[str, str] | None:
        family: tuple[str, str] | None = None
        if name not in catalogue.NOT_EXPOSED:
            exposed, kind, help_text = catalogue.exposed(name)
            # Own families are unreachable through the edge; refused here too so no
            # other path breaks a scrape.
            if exposed not in OWN_FAMILIES:
                family = (exposed, _header(exposed, kind, help_text))
        if len(self._families) >= SHARED_MAX:
            self._families.clear()
        self._families[name] = family
        return family

    def _labelset(self, labels: Labels) -> str | None:
        extra: str | None = None
        if not any(label in RESERVED for label, _ in labels):  # as for own families
            extra = "," + _labelset(labels) if labels else ""
        if len(self._labelsets) >= SHARED_MAX:
            self._labelsets.clear()
        self._labelsets[labels] = extra
        return extra

    def render(self) -> bytes:
        """The agents' part of the page. Safe to call from a worker thread while the loop
        applies reports: the agent map is copied first (one C-level step under the GIL),
        and an agent's pieces are replaced whole, never changed in place, so each agent
        appears once with one report's values."""
        return "".join(header + body for _, header, body in self.parts()).encode()

    def owner_keys(self) -> dict[str, tuple[bool, float]]:
        """Per agent: (its stream is open here, its last report time); the process with
        the greatest key holds an agent's current series (collector.workers)."""
        return {
            live.agent_id: (live.connected, -1.0 if live.last_seen is None else live.last_seen)
            for live in list(self._state.agents.values())
        }

    def parts(self, only: Collection[str] | None = None) -> list[tuple[str, str, str]]:
        """(family, header, lines) in page order; ``only``: just these agents (the ones
        this worker process exposes, collector.metricsmerge). Thread-safe as
        :meth:`render`."""
        up: list[str] = []
        last: list[str] = []
        dropped: list[str] = []
        per_family: dict[str, list[str]] = {}
        headers: dict[str, str] = {}
        for live in list(self._state.agents.values()):
            if only is not None and live.agent_id not in only:
                continue
            lines = self._agents.get(live.agent_id)
            key = (live.agent_id, live.hostname, live.customer, live.site)
            target = lines.target if lines is not None and lines.target_key == key else _target(key)
            alive = self._is_up(live)
            up.append(f"tripline_agent_up{{{target}}} {1.0 if alive else 0.0}\n")
            if live.last_seen is not None:
                last.append(
                    f"tripline_agent_last_report_timestamp_seconds{{{target}}} {live.last_seen!r}\n"
                )
            dropped.append(
                f"tripline_agent_spool_dropped_reports_total{{{target}}} "
                f"{float(live.dropped_reports_total)!r}\n"
            )
            if alive and lines is not None:
                for family, (header, text) in lines.chunks.items():
                    texts = per_family.get(family)
                    if texts is None:
                        texts = per_family[family] = []
                        headers[family] = header
                    texts.append(text)
        out = [
            ("tripline_agent_up", _header("tripline_agent_up", "gauge", UP_HELP), "".join(up)),
            (
                "tripline_agent_last_report_timestamp_seconds",
                _header("tripline_agent_last_report_timestamp_seconds", "gauge", LAST_HELP),
                "".join(last),
            ),
            (
                "tripline_agent_spool_dropped_reports",
                _header("tripline_agent_spool_dropped_reports_total", "counter", DROPPED_HELP),
                "".join(dropped),
            ),
        ]
        for family in sorted(per_family):
            out.append((family, headers[family], "".join(per_family[family])))
        return out


RESERVED = catalogue.RESERVED_LABELS
_UNKNOWN: tuple[str, str] = ("", "")
_UNKNOWN_LABELS = "\0"


UP_HELP = "1 when the agent reported within its offline threshold."
LAST_HELP = "Collector time of the agent's last applied report."
DROPPED_HELP = "Reports the agent dropped from its full spool (an outage longer than it buffers)."


def _header(name: str, kind: str, help_text: str) -> str:
    help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def exposed_name(name: str) -> tuple[str, str]:
    """The exposed family name of agent metric ``name`` and its type.

    A core counter ``<name>_total`` is the family ``tripline_<name>`` (its samples keep
    ``_total``); a core gauge is ``tripline_<name>``; anything else is the untyped extra
    ``tripline_x_<name>``. Legacy names (``process_count``) map to their core name.
    """
    name = catalogue.LEGACY_NAMES.get(name, name)
    exposed, kind, _ = catalogue.exposed(name)
    if kind == "counter":
        return exposed[: -len("_total")], kind
    return exposed, kind
