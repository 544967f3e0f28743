"""A report's process context (top processes, logged-in users): checked, bounded, escaped,
and turned into a dict only when a ticket reads it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf.json_format import MessageToDict

from tripline.collector.wirecheck import InvalidMessage, _shown, clean_text
from tripline.v1 import tripline_pb2 as pb

# The process context of one report: per list, per field.
MAX_PROCESSES = 20
MAX_USERS = 32
MAX_PROCESS_NAME = 256
MAX_USERNAME = 128
MAX_CMDLINE = 1024
# Larger serialized contexts are re-encoded bounded at once, so a report's raw context
# held for a later ticket never costs more than about this.
MAX_CONTEXT_BYTES = 64 * 1024


def _context_bytes(context: pb.Context, where: str, seq: int) -> bytes:
    """The serialized context, re-encoded bounded when it is larger than allowed."""
    for process in itertools.chain(
        context.top_cpu[:MAX_PROCESSES], context.top_memory[:MAX_PROCESSES]
    ):
        if not (math.isfinite(process.cpu_ratio) and process.cpu_ratio >= 0):
            raise InvalidMessage(
                f"{where}: context process {_shown(process.name)} has cpu_ratio "
                f"{process.cpu_ratio!r}; it must be finite and >= 0",
                seq,
                "context",
            )
    if (
        len(context.top_cpu) > MAX_PROCESSES
        or len(context.top_memory) > MAX_PROCESSES
        or len(context.logged_in_users) > MAX_USERS
        or context.ByteSize() > MAX_CONTEXT_BYTES
    ):
        return bounded_context(context).SerializeToString()
    return context.SerializeToString()


def bounded_context(context: pb.Context) -> pb.Context:
    """At most MAX_PROCESSES processes per list and MAX_USERS users, every string
    escaped and cut to its bound."""
    out = pb.Context()
    for source, target in ((context.top_cpu, out.top_cpu), (context.top_memory, out.top_memory)):
        for process in source[:MAX_PROCESSES]:
            target.add(
                pid=process.pid,
                name=clean_text(process.name, MAX_PROCESS_NAME),
                username=clean_text(process.username, MAX_USERNAME),
                cpu_ratio=process.cpu_ratio,
                memory_rss_bytes=process.memory_rss_bytes,
                cmdline=clean_text(process.cmdline, MAX_CMDLINE),
            )
    out.logged_in_users.extend(
        clean_text(user, MAX_USERNAME) for user in context.logged_in_users[:MAX_USERS]
    )
    return out


class LazyContext(Mapping[str, Any]):
    """A report's machine context, converted to a dict only when read.

    Most reports' context is never read: it matters only when a ticket opens. Holding
    the serialized bytes rather than the message keeps the parsed report collectable.
    The dict is bounded and escaped (:func:`bounded_context`) whatever the bytes hold.
    """

    __slots__ = ("_data", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._data: dict[str, Any] | None = None

    def _dict(self) -> dict[str, Any]:
        if self._data is None:
            self._data = MessageToDict(
                bounded_context(pb.Context.FromString(self._raw)),
                preserving_proto_field_name=True,
            )
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"LazyContext({self._dict()!r})"
