"""The transport baseline: a bare grpc.aio servicer that acknowledges every report.

It implements the collector's service (tripline.v1.Collector) with the generated servicer
and nothing else: Enroll answers with a made-up id and credential, Connect answers a
Hello with a Welcome and every Report with an Ack of its seq. gRPC decodes each message
with the generated protobuf deserializer (as any servicer's does); nothing checks a
credential, a name or a value, and nothing is stored. What this process spends per
report is what gRPC, HTTP/2, TLS and protobuf decoding cost in Python on this machine:
the floor the collector's own cost is measured against, in the same run and with the
same server options, certificate and generator.

Runs as its own process (``start_bare_server``); counts the reports it acknowledged in
shared memory so the benchmark reads the count at the edges of its window.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import multiprocessing.sharedctypes
import queue
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc import aio

from bench import procstat
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

# The collector's default max_series_per_agent, offered in its Welcome.
SERIES_TABLE_MAX = 2000

MAX_MESSAGE_BYTES = 4 * 2**20


def server_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> tuple[tuple[str, int], ...]:
    """The collector's own gRPC server options (collector.grpcserver) at its defaults, with
    its message size limit set to ``max_message_bytes``. No SO_REUSEPORT setting: the
    baseline binds a port of its own. Called in the benchmark's process (BareSpec), so the
    baseline's process never imports collector code and its RSS stays gRPC's alone."""
    from tripline.collector.config import CollectorConfig
    from tripline.collector.grpcserver import grpc_server_options

    config = CollectorConfig(max_message_bytes=max_message_bytes)
    return tuple(grpc_server_options(config, share_port=None))


class BareCollector(pb_grpc.CollectorServicer):
    """Acks every report; counts them in ``acked`` (shared memory, one writer)."""

    def __init__(self, acked: Any, interval: float) -> None:
        self.acked = acked
        self.interval = interval
        self._ids = itertools.count(1)

    async def Enroll(
        self, request: pb.EnrollRequest, context: aio.ServicerContext
    ) -> pb.EnrollResponse:
        number = next(self._ids)
        return pb.EnrollResponse(agent_id=f"bare-{number}", credential="bare", customer="bench")

    async def Connect(
        self, request_iterator: AsyncIterator[pb.AgentMessage], context: aio.ServicerContext
    ) -> AsyncIterator[pb.CollectorMessage]:
        acked = self.acked
        async for message in request_iterator:
            if message.HasField("report"):
                acked.value += 1
                yield pb.CollectorMessage(ack=pb.Ack(seq=message.report.seq))
            else:
                yield pb.CollectorMessage(
                    welcome=pb.Welcome(
                        agent_id="bare",
                        customer="bench",
                        settings=pb.Settings(interval_seconds=self.interval),
                        # as the collector does: the generator may intern its series
                        series_table_max=SERIES_TABLE_MAX,
                    )
                )


@dataclass(frozen=True)
class BareSpec:
    interval: float
    tls_cert: Path | None  # None: plaintext (for comparison runs)
    tls_key: Path | None
    # built where the spec is made (the benchmark's process): see server_options
    options: tuple[tuple[str, int], ...] = field(default_factory=server_options)


async def _serve(spec: BareSpec, acked: Any, ready: Any) -> None:
    server = aio.server(options=spec.options)
    pb_grpc.add_CollectorServicer_to_server(BareCollector(acked, spec.interval), server)
    address = "127.0.0.1:0"
    if spec.tls_cert is not None and spec.tls_key is not None:
        credentials = grpc.ssl_server_credentials(
            [(spec.tls_key.read_bytes(), spec.tls_cert.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    await server.start()
    ready.put(("port", port))
    await server.wait_for_termination()


def serve_entry(spec: BareSpec, acked: Any, ready: Any) -> None:
    """Process entry point (multiprocessing, spawn); runs until terminated."""
    procstat.raise_nofile_limit()
    try:
        asyncio.run(_serve(spec, acked, ready))
    except (OSError, grpc.RpcError) as exc:
        ready.put(("failed", f"{type(exc).__name__}: {exc}"))


class BareServerFailed(Exception):
    """The baseline server did not start; the message says why."""


@dataclass
class BareServer:
    process: multiprocessing.process.BaseProcess
    acked: Any  # multiprocessing RawValue("Q")
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def acked_total(self) -> int:
        return int(self.acked.value)

    def stop(self) -> int | None:
        """Terminate it (it holds nothing worth a graceful stop); its exit code."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        return self.process.exitcode


def start_bare_server(spec: BareSpec, ready_within: float = 60.0) -> BareServer:
    context = multiprocessing.get_context("spawn")
    acked = context.RawValue("Q", 0)
    ready = context.Queue()
    process = context.Process(target=serve_entry, args=(spec, acked, ready), daemon=True)
    process.start()
    try:
        kind, value = ready.get(timeout=ready_within)
    except queue.Empty:
        kind, value = "failed", f"not listening within {ready_within:g}s"
    if kind != "port":
        with contextlib.suppress(OSError):
            process.kill()
        raise BareServerFailed(f"baseline server: {value}")
    return BareServer(process, acked, int(value))
