"""The agent's gRPC channel to the collector: its options (keepalive, message limits,
reconnect timing) and which status codes are worth retrying."""

from __future__ import annotations

import grpc
from grpc import aio

# Failures worth retrying; anything else is a bug or a refusal and is logged loudly
# (and still retried, slowly: an office PC agent must never give up for good).
RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def channel_options(
    max_message_bytes: int, keepalive_time: float = 30.0, keepalive_timeout: float = 10.0
) -> list[tuple[str, int]]:
    # By default ping every 30 s and give up on a silent peer after 10 s, so a blackholed
    # connection is noticed within ~40 s; the collector permits pings every 10 s while it
    # sends nothing (on a live stream its acks are data, so shorter settings work too).
    return [
        ("grpc.keepalive_time_ms", round(keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(keepalive_timeout * 1000)),
        # gRPC core (1.6x on) times every ping out by this instead, default 60 s: without
        # it a blackholed stream is noticed only after a minute (tests/e2e/test_faults.py).
        ("grpc.http2.ping_timeout_ms", round(keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # our own backoff decides reconnect timing; keep gRPC's short
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        # No BDP probing: it pings on received data to size the flow-control window for
        # bulk transfers; one small report per interval never needs more than the default
        # window, and the pings cost the PC CPU in gRPC's threads (bench/README.md).
        ("grpc.http2.bdp_probe", 0),
    ]


def open_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    max_message_bytes: int,
    keepalive: tuple[float, float],
) -> aio.Channel:
    """A channel to ``target``; ``credentials`` None means plaintext, which only an
    explicit ``plaintext: true`` config asks for."""
    options = channel_options(max_message_bytes, *keepalive)
    if credentials is None:
        return aio.insecure_channel(target, options=options)
    return aio.secure_channel(target, credentials, options=options)
