"""One /metrics over several worker processes (``tripline collector --workers N``).

Worker 0 serves the HTTP port. To render the page it asks every other worker, over a
private loopback port and with the workers' shared secret, in two rounds:

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
import hmac
import logging
import marshal
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripline.collector.exposition import SeriesExposition

log = logging.getLogger(__name__)

INTERNAL_PREFIX = "/internal/v1/workers"
SECRET_HEADER = "x-tripline-worker-secret"
# the body of a part request: agent ids to include (bounded: ids are short)
MAX_INCLUDE_BYTES = 64 * 2**20
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


class PeerError(Exception):
    """A worker's private port did not answer as expected."""


# Workers talk over loopback only. urllib's default opener honours HTTP_PROXY from the
# environment, and a collector host behind a corporate proxy usually has one set: the
# workers' secret would go to the proxy and the merge would fail. No proxy, ever.
_PEER_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def open_peer(request: urllib.request.Request, timeout: float) -> Any:
    """Open a request to a sibling worker's private port, never through a proxy."""
    return _PEER_OPENER.open(request, timeout=timeout)


def _call(url: str, secret: str, body: bytes | None = None) -> Any:
    request = urllib.request.Request(
        url, data=body, headers={SECRET_HEADER: secret}, method="GET" if body is None else "POST"
    )
    try:
        with open_peer(request, PEER_TIMEOUT) as response:
            return marshal.loads(response.read())
    except (OSError, ValueError, EOFError, TypeError) as exc:
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
                keys.append(_call(f"{base}{INTERNAL_PREFIX}/owners", self.secret))
                reached.append(base)
            except PeerError as exc:
                self._peer_failed(exc)
        owned = owners(keys)
        parts = [self.exposition.parts(owned[0]) + own_families(self.registry, 0, shared=True)]
        for base, mine in zip(reached, owned[1:], strict=True):
            try:
                body = marshal.dumps(sorted(mine))
                parts.append(_call(f"{base}{INTERNAL_PREFIX}/part", self.secret, body))
            except PeerError as exc:
                self._peer_failed(exc)
        return merge(parts)

    def _peer_failed(self, exc: PeerError) -> None:
        self.on_peer_error()
        log.warning("a worker's metrics were left out of the page", extra={"error": str(exc)})


def internal_routes(
    exposition: SeriesExposition, registry: CollectorRegistry, index: int, secret: str
) -> list[Route]:
    """The private endpoints a worker other than 0 serves to worker 0."""

    def allowed(request: Request) -> bool:
        given = request.headers.get(SECRET_HEADER, "")
        return hmac.compare_digest(given.encode(), secret.encode())

    async def owner_keys(request: Request) -> Response:
        if not allowed(request):
            return Response(status_code=403)
        body = await asyncio.to_thread(lambda: marshal.dumps(exposition.owner_keys()))
        return Response(body, media_type="application/octet-stream")

    async def part(request: Request) -> Response:
        if not allowed(request):
            return Response(status_code=403)
        raw = await request.body()
        if len(raw) > MAX_INCLUDE_BYTES:
            return Response(status_code=413)
        only: Collection[str] = frozenset(marshal.loads(raw))

        def render() -> bytes:
            own = own_families(registry, index, shared=False)
            return marshal.dumps(exposition.parts(only) + own)

        return Response(await asyncio.to_thread(render), media_type="application/octet-stream")

    return [
        Route(f"{INTERNAL_PREFIX}/owners", owner_keys),
        Route(f"{INTERNAL_PREFIX}/part", part, methods=["POST"]),
    ]
