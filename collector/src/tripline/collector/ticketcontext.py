"""What the engine puts on a ticket: the machine's context when the problem held, and
the ticket policy from the collector's config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tripline.collector import reportcontext, ticketmodel
from tripline.collector.config import CollectorConfig
from tripline.collector.state import AgentLive


def ticket_policy(config: CollectorConfig) -> ticketmodel.TicketPolicy:
    t = config.tickets
    return ticketmodel.TicketPolicy(
        reopen_window=t.reopen_window,
        flap_count=t.flap_count,
        flap_window=t.flap_window,
        escalate_after={1: t.escalate_tier1_after, 2: t.escalate_tier2_after},
    )


def ticket_context(live: AgentLive, report_context: Mapping[str, Any]) -> dict[str, Any]:
    """What the first line needs on the ticket: processes, disks, uptime, memory."""
    filesystems = []
    for name, labels, value in sorted(live.latest()):
        if name == "filesystem_used_ratio":
            label_map = dict(labels)
            filesystems.append(
                {
                    **label_map,
                    "used_ratio": round(value, 4),
                    "avail_bytes": live.value("filesystem_avail_bytes", **label_map),
                    "size_bytes": live.value("filesystem_size_bytes", **label_map),
                }
            )
    # The context was bounded and escaped when decoded (reportcontext.LazyContext); the counts
    # are cut again here so no other path can put more into a ticket and its events.
    return {
        "top_cpu": list(report_context.get("top_cpu", []))[: reportcontext.MAX_PROCESSES],
        "top_memory": list(report_context.get("top_memory", []))[: reportcontext.MAX_PROCESSES],
        "logged_in_users": list(report_context.get("logged_in_users", []))[
            : reportcontext.MAX_USERS
        ],
        "filesystems": filesystems,
        "uptime_seconds": live.value("uptime_seconds"),
        "memory_used_ratio": live.value("memory_used_ratio"),
        "cpu_usage_ratio": live.value("cpu_usage_ratio"),
        "load1": live.value("load1"),
    }
