"""Enrollment: trade the enrollment token for this agent's own id and credential, once.

The identity is kept in ``identity.json`` in the state directory; later starts load it
and never enroll again. A token the collector refuses is a configuration error to fix
by hand (`EnrollmentFailed`); anything else is retried with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc import aio

from tripline.agent import identity as identity_file
from tripline.agent.identity import Identity
from tripline.common.backoff import Backoff
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

# The collector says the token itself is wrong: retrying cannot help.
REFUSED = (
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
)


class EnrollmentFailed(Exception):
    """The collector refused the enrollment token: a configuration error to fix by hand."""


async def load_or_enroll(
    stub: pb_grpc.CollectorAsyncStub,
    stop: asyncio.Event,
    *,
    path: Path,
    token: str | None,
    site: str,
    host_info: Callable[[], pb.HostInfo],
    backoff: Backoff,
    on_identity: Callable[[Identity], None] | None = None,
) -> Identity | None:
    """The saved identity, else a new one from the collector (saved before it is
    returned, and handed to ``on_identity``); None when ``stop`` is set first."""
    ident = await asyncio.to_thread(identity_file.load, path)
    if ident is not None:
        return ident
    if not token:
        raise EnrollmentFailed(
            f"not enrolled yet ({path} missing) and no enrollment token "
            "given: pass --enrollment-token or set enrollment_token in the config"
        )
    while not stop.is_set():
        try:
            response = await stub.Enroll(
                pb.EnrollRequest(enrollment_token=token, host=host_info(), site=site),
                timeout=30,
            )
        except aio.AioRpcError as exc:
            if exc.code() in REFUSED:
                raise EnrollmentFailed(exc.details() or str(exc.code())) from None
            delay = backoff.next()
            log.warning(
                "enrollment failed, retrying",
                extra={"code": exc.code().name, "error": exc.details(), "in_seconds": delay},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            continue
        ident = Identity(
            agent_id=response.agent_id,
            credential=response.credential,
            customer=response.customer,
        )
        await asyncio.to_thread(identity_file.save, path, ident)
        if on_identity is not None:
            on_identity(ident)
        log.info("enrolled", extra={"agent_id": ident.agent_id, "customer": ident.customer})
        backoff.reset()
        return ident
    return None
