"""One /metrics over several worker processes (``tripline collector --workers N``).

Worker 0 serves the HTTP port. To render the page it asks every other worker, over a
private loopback port, requests and answers signed with the workers' shared secret
(:mod:`.workerauth`), in two rounds:

1. ``owners``: per agent the worker knows, (its stream is open there, its last report
   time). The agent goes to the worker with the greatest key (ties: the lowest index):
   an agent that reconnected to another worker stays in the old one's live state until
   it goes offline, with stale values, and must not appear twice.
2. ``part``: the worker's families (header, lines) rendered for the agents given to it
   in round 1 only, plus its own ``tripline_collector_*`` families with a ``worker``
   label. Naming the agents to include, not those to leave out, keeps an agent that
   moves between the two rounds to one worker: it is shown once, by the worker it was
   given to (which keeps its state), at most one scrape old; an agent first seen between
   the rounds appears from the next page on.

Worker 0 then writes each family's header once and every worker's lines after it, so a
family stays contiguous and every agent appears exactly once. The bytes work of each
part runs in its own worker, off its event loop. A worker that cannot be reached is left
out of that page (its agents are missing from it), logged and counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import struct
from collections.abc import Callable, Collection, Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripline.collector.exposition import SeriesExposition
from tripline.collector.workerauth import PeerError, call, signed_answer, verified

log = logging.getLogger(__name__)

INTERNAL_PREFIX = "/internal/v1/workers"
# the body of a part request: agent ids to include (bounded: ids are short)
MAX_INCLUDE_BYTES = 64 * 2**20
# a worker's answers: owner keys (about 60 bytes per agent), its part of the page
MAX_OWNERS_BYTES = 64 * 2**20
MAX_PART_BYTES = 2 * 2**30
MAX_PART_FAMILIES = 100_000
PEER_TIMEOUT = 30.0
# the database's counts: the same in every worker, so only worker 0's are on the page
SHARED_FAMILIES = frozenset({"tripline_collector_tickets"})

Part = list[tuple[str, str, str]]  # (family, header, lines)
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{?)(.*)", re.DOTALL)


def own_families(registry: CollectorRegistry, index: int, *, shared: bool) -> Part:
    """The registry's families with ``worker="<index>"`` on every sample; ``shared``
    keeps the database-wide families (worker 0 only, without the label: they are the
    same whichever worker reads them). Family keys are prometheus_client's HELP names
    (a counter is two: ``<name>_total`` and ``<name>_created``)."""
    out: Part = []
    family = ""
    header: list[str] = []
    lines: list[str] = []

    def flush() -> None:
        if family and (shared or family not in SHARED_FAMILIES):
            out.append((family, "".join(header), "".join(lines)))

    for line in generate_latest(registry).decode().splitlines(keepends=True):
        if line.startswith("# HELP "):
            flush()
            family, header, lines = line.split(" ", 3)[2], [line], []
        elif line.startswith("#"):
            header.append(line)
        elif family in SHARED_FAMILIES:
            lines.append(line)
        else:
            lines.append(with_worker_label(line, index))
    flush()
    return out


def with_worker_label(line: str, index: int) -> str:
    match = _SAMPLE.fullmatch(line)
    if match is None:  # not a sample line: prometheus_client never writes one
        return line
    name, brace, rest = match.groups()
    if brace:
        return f'{name}{{worker="{index}",{rest}'
    return f'{name}{{worker="{index}"}}{rest}'


def merge(parts: Iterable[Part]) -> bytes:
    """Families in order of first appearance, each header once, every part's lines after."""
    families: dict[str, tuple[str, list[str]]] = {}
    for part in parts:
        for family, header, lines in part:
            entry = families.get(family)
            if entry is None:
                families[family] = (header, [lines])
            else:
                entry[1].append(lines)
    return "".join(h + "".join(bodies) for h, bodies in families.values()).encode()


def owners(keys: Sequence[dict[str, tuple[bool, float]]]) -> list[set[str]]:
    """Per worker, the agents it exposes: those whose greatest key it holds (ties: the
    lowest index), so each agent any worker knows goes to exactly one."""
    best: dict[str, tuple[tuple[bool, float], int]] = {}
    for index, worker_keys in enumerate(keys):
        for agent_id, key in worker_keys.items():
            held = best.get(agent_id)
            if held is None or key > held[0]:
                best[agent_id] = (key, index)
    owned: list[set[str]] = [set() for _ in keys]
    for agent_id, (_, index) in best.items():
        owned[index].add(agent_id)
    return owned


def encode_owner_keys(keys: dict[str, tuple[bool, float]]) -> bytes:
    return json.dumps(keys, separators=(",", ":")).encode()


def decode_owner_keys(data: bytes) -> dict[str, tuple[bool, float]]:
    """A worker's owner keys, every entry checked; ValueError on anything else."""
    loaded = json.loads(data)
    if not isinstance(loaded, dict):
        raise ValueError("owner keys: not an object")
    keys: dict[str, tuple[bool, float]] = {}
    for agent_id, key in loaded.items():
        if (
            not isinstance(key, list)
            or len(key) != 2
            or not isinstance(key[0], bool)
            or not isinstance(key[1], int | float)
            or isinstance(key[1], bool)
            or not math.isfinite(key[1])
        ):
            raise ValueError(f"owner keys: bad entry for {agent_id[:80]!r}")
        keys[agent_id] = (key[0], float(key[1]))
    return keys


def encode_agent_ids(agent_ids: Iterable[str]) -> bytes:
    return json.dumps(sorted(agent_ids), separators=(",", ":")).encode()


def decode_agent_ids(data: bytes) -> frozenset[str]:
    loaded = json.loads(data)
    if not isinstance(loaded, list) or not all(isinstance(a, str) for a in loaded):
        raise ValueError("agent ids: not a list of strings")
    return frozenset(loaded)


_COUNT = struct.Struct(">I")
_LENGTH = struct.Struct(">Q")


def encode_part(part: Part) -> bytes:
    """(family, header, lines) triples as a count, then each text as length + UTF-8."""
    out = [_COUNT.pack(len(part))]
    for fields in part:
        for text in fields:
            data = text.encode()
            out.append(_LENGTH.pack(len(data)))
            out.append(data)
    return b"".join(out)


def decode_part(data: bytes) -> Part:
    """The inverse of encode_part, every length checked; ValueError on anything else."""
    view = memoryview(data)
    if len(data) < _COUNT.size:
        raise ValueError("part: truncated")
    (count,) = _COUNT.unpack_from(data, 0)
    if count > MAX_PART_FAMILIES:
        raise ValueError(f"part: {count} families")
    position = _COUNT.size
    part: Part = []
    for _ in range(count):
        fields: list[str] = []
        for _ in range(3):
            if len(data) - position < _LENGTH.size:
                raise ValueError("part: truncated")
            (length,) = _LENGTH.unpack_from(data, position)
            position += _LENGTH.size
            if length > len(data) - position:
                raise ValueError("part: truncated")
            fields.append(str(view[position : position + length], "utf-8"))
            position += length
        part.append((fields[0], fields[1], fields[2]))
    if position != len(data):
        raise ValueError("part: bytes after the last family")
    return part


def _owner_keys_of(url: str, secret: str) -> dict[str, tuple[bool, float]]:
    data = call(url, secret, None, timeout=PEER_TIMEOUT, max_bytes=MAX_OWNERS_BYTES)
    try:
        return decode_owner_keys(data)
    except ValueError as exc:  # json's errors are ValueErrors too
        raise PeerError(f"{url}: {exc}") from exc


def _part_of(url: str, secret: str, agent_ids: Iterable[str]) -> Part:
    body = encode_agent_ids(agent_ids)
    data = call(url, secret, body, timeout=PEER_TIMEOUT, max_bytes=MAX_PART_BYTES)
    try:
        return decode_part(data)
    except ValueError as exc:  # UnicodeDecodeError is one
        raise PeerError(f"{url}: {exc}") from exc


class MergedRenderer:
    """Worker 0's page: its own part and every reachable peer's (runs in a thread)."""

    def __init__(
        self,
        exposition: SeriesExposition,
        registry: CollectorRegistry,
        peers: Callable[[], list[str]],
        secret: str,
        on_peer_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.exposition = exposition
        self.registry = registry
        self.peers = peers
        self.secret = secret
        self.on_peer_error = on_peer_error

    def render(self) -> bytes:
        keys = [self.exposition.owner_keys()]
        reached: list[str] = []
        for base in self.peers():
            try:
                keys.append(_owner_keys_of(f"{base}{INTERNAL_PREFIX}/owners", self.secret))
                reached.append(base)
            except PeerError as exc:
                self._peer_failed(exc)
        owned = owners(keys)
        parts = [self.exposition.parts(owned[0]) + own_families(self.registry, 0, shared=True)]
        for base, mine in zip(reached, owned[1:], strict=True):
            try:
                parts.append(_part_of(f"{base}{INTERNAL_PREFIX}/part", self.secret, mine))
            except PeerError as exc:
                self._peer_failed(exc)
        return merge(parts)

    def _peer_failed(self, exc: PeerError) -> None:
        self.on_peer_error()
        log.warning("a worker's metrics were left out of the page", extra={"error": str(exc)})


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it passes ``limit`` bytes (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def internal_routes(
    exposition: SeriesExposition, registry: CollectorRegistry, index: int, secret: str
) -> list[Route]:
    """The private endpoints a worker other than 0 serves to worker 0 (requests and
    answers signed, collector.workerauth)."""

    async def owner_keys(request: Request) -> Response:
        nonce = verified(request, secret)
        if nonce is None:
            return Response(status_code=403)
        body = await asyncio.to_thread(lambda: encode_owner_keys(exposition.owner_keys()))
        return signed_answer(secret, nonce, request.url.path, body, "application/json")

    async def part(request: Request) -> Response:
        raw = await _bounded_body(request, MAX_INCLUDE_BYTES)
        if raw is None:
            return Response(status_code=413)
        nonce = verified(request, secret, raw)
        if nonce is None:
            return Response(status_code=403)
        try:
            only: Collection[str] = decode_agent_ids(raw)
        except ValueError:
            return Response(status_code=400)

        def render() -> bytes:
            own = own_families(registry, index, shared=False)
            return encode_part(exposition.parts(only) + own)

        body = await asyncio.to_thread(render)
        return signed_answer(secret, nonce, request.url.path, body, "application/octet-stream")

    return [
        Route(f"{INTERNAL_PREFIX}/owners", owner_keys),
        Route(f"{INTERNAL_PREFIX}/part", part, methods=["POST"]),
    ]
