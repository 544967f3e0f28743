"""Worker 0's /readyz speaks for every worker of ``tripline collector --workers N``.

A load balancer or service manager probes one HTTP port, worker 0's; the other workers
share the gRPC port, so an agent can land on any of them. Worker 0 is therefore ready
only when every worker is: it asks each other worker's private port (signed with the
workers' shared secret, as for /metrics, :mod:`collector.workerauth`) for its own readiness,
and names each worker that is not serving and why::

    503 worker 1: not answering (timed out)
    503 worker 0: store unavailable: database is locked; worker 1: starting

A worker that has not yet written its port file is "starting"; one whose port refuses
or does not answer within ``PEER_READY_TIMEOUT`` (stopped, dead and not yet restarted,
wedged) is "not answering". Each change of a worker's readiness is logged once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.error
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripline.collector.metricsmerge import INTERNAL_PREFIX
from tripline.collector.workerauth import PeerError, call, signed_answer, verified
from tripline.collector.workers import WorkerRole
from tripline.common.terminal import escape

log = logging.getLogger(__name__)

READY_PATH = f"{INTERNAL_PREFIX}/ready"
# Below the few seconds a probe waits for /readyz: a stopped worker makes it answer 503
# rather than time out itself.
PEER_READY_TIMEOUT = 2.0
# a peer's reason is our own code's text, still bounded: it goes into a response line
MAX_REASON = 300
MAX_ANSWER_BYTES = 4096

ReadyAnswer = tuple[bool, str]


def ready_route(ready: Callable[[], ReadyAnswer], secret: str) -> Route:
    """The private endpoint a worker other than 0 answers worker 0's readiness probe on."""

    async def handler(request: Request) -> Response:
        nonce = verified(request, secret)
        if nonce is None:
            return Response(status_code=403)
        ok, reason = ready()
        body = json.dumps({"ready": ok, "reason": reason}).encode()
        return signed_answer(secret, nonce, request.url.path, body, "application/json")

    return Route(READY_PATH, handler)


def describe(exc: BaseException) -> str:
    """Why a sibling did not answer, in a few words: "HTTP 403", "timed out"..."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)


def peer_readiness(
    role: WorkerRole, index: int, timeout: float = PEER_READY_TIMEOUT
) -> ReadyAnswer:
    """Worker `index`'s own readiness, asked over its private port (blocking)."""
    try:
        port = int((role.run_dir / f"{index}.port").read_text())
    except (OSError, ValueError):
        return False, "starting"  # no port announced yet (first start or a restart)
    url = f"http://127.0.0.1:{port}{READY_PATH}"
    try:
        answer = json.loads(
            call(url, role.secret, None, timeout=timeout, max_bytes=MAX_ANSWER_BYTES)
        )
    except PeerError as exc:  # refused, timed out, an HTTP error, unsigned, too large
        return False, f"not answering ({describe(exc.__cause__ or exc)})"
    except ValueError as exc:  # a bad body
        return False, f"not answering ({exc})"
    if not isinstance(answer, dict):
        return False, "not answering (unexpected answer)"
    ok, reason = answer.get("ready"), answer.get("reason")
    if not isinstance(ok, bool) or not isinstance(reason, str):
        return False, "not answering (unexpected answer)"
    return ok, reason


class AllWorkersReady:
    """Worker 0's /readyz: its own readiness and every other worker's, in one answer."""

    def __init__(
        self,
        own: Callable[[], ReadyAnswer],
        role: WorkerRole,
        ask: Callable[[WorkerRole, int], ReadyAnswer] = peer_readiness,
    ) -> None:
        self.own = own
        self.role = role
        self.ask = ask
        self._last: dict[int, bool] = {}
        self._lock = threading.Lock()

    async def __call__(self) -> ReadyAnswer:
        indexes = range(1, self.role.count)
        answers = await asyncio.gather(
            *(asyncio.to_thread(self.ask, self.role, index) for index in indexes)
        )
        peers = ((i, ok, why) for i, (ok, why) in zip(indexes, answers, strict=True))
        states = [(0, *self.own()), *peers]
        self._log_changes(states)
        not_ready = [
            f"worker {index}: {escape(reason)[:MAX_REASON]}"
            for index, ok, reason in states
            if not ok
        ]
        if not_ready:
            return False, "; ".join(not_ready)
        return True, "ready"

    def _log_changes(self, states: list[tuple[int, bool, str]]) -> None:
        with self._lock:  # two probes at once: each change logged once
            for index, ok, reason in states:
                if self._last.get(index, True) != ok:
                    log.log(
                        logging.INFO if ok else logging.WARNING,
                        "worker ready" if ok else "worker not ready",
                        extra={"worker": index, "reason": escape(reason)[:MAX_REASON]},
                    )
                self._last[index] = ok
