# ruff: noqa: F811  (the rig fixtures are imported; tests take them as parameters)
"""Hostile and broken input on the Connect stream, over real gRPC on loopback.

One collector serves the whole module in a background event loop, with a real agent
reporting to it the whole time: every test checks that the agent's stream was never
disturbed and its applied seq kept advancing. Hostile bytes go through a generic
stream-stream call with identity serializers, so anything can be sent, not only what
the generated code can build. A rejected report carries a sample that a rule turns into
a ticket at once: were anything from it applied, the store would show it.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import TOKEN
from tests.integration.hostile_rig import (  # noqa: F401  (fixtures)
    HELLO_TIMEOUT,
    INSTANCE,
    Outcome,
    Rig,
    assert_actionable,
    good_agent_unaffected,
    hello,
    next_seq,
    report_msg,
    rig,
    tripwire,
    wait_until,
)
from tripline.collector import agent_instances, agents_store, ticketqueries
from tripline.collector.seriescheck import LABEL_NAME, METRIC_NAME
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

# -- broken reports, generated ------------------------------------------------------

BAD_METRIC_NAMES = st.one_of(
    st.text(max_size=250).filter(lambda s: not METRIC_NAME.fullmatch(s) or len(s) > 200),
    # $ matches before a trailing newline: full-match semantics refuse these
    st.from_regex(METRIC_NAME, fullmatch=True).map(lambda s: s[:50] + "\n"),
)
BAD_LABEL_NAMES = st.one_of(
    st.text(min_size=1, max_size=60).filter(lambda s: not LABEL_NAME.fullmatch(s)),
    st.from_regex(LABEL_NAME, fullmatch=True).map(lambda s: s[:50] + "\n"),
)
RESERVED_LABEL_NAMES = st.one_of(
    st.sampled_from(["agent_id", "host", "customer", "site", "job", "instance"]),
    st.from_regex(r"exported_[a-z_]{0,20}", fullmatch=True),
    st.from_regex(r"__[a-z_]{0,20}", fullmatch=True),
)


@st.composite
def broken_report(draw: st.DrawFn) -> tuple[str, list[pb.Sample], dict[str, Any], str]:
    """(reason counted, samples, report fields, fragment the status message must contain)."""
    defect = draw(
        st.sampled_from(
            [
                "value",
                "metric_name",
                "label_name",
                "label_reserved",
                "core_labels",
                "too_many_labels",
                "long_label_value",
                "duplicate_series",
                "instance",
                "collected_at",
                "implausible_time",
                "too_many_samples",
                "host",
                "context",
            ]
        )
    )
    samples = [tripwire()]
    fields: dict[str, Any] = {}
    if defect == "value":
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        samples.append(pb.Sample(name="cpu_usage_ratio", value=value))
        return "value", samples, fields, "is not finite"
    if defect == "metric_name":
        samples.append(pb.Sample(name=draw(BAD_METRIC_NAMES), value=1.0))
        return "metric_name", samples, fields, "is not a valid Prometheus name"
    if defect == "label_name":
        samples.append(
            pb.Sample(name="probe_value", value=1.0, labels={draw(BAD_LABEL_NAMES): "v"})
        )
        return "label_name", samples, fields, "is not a valid Prometheus label name"
    if defect == "label_reserved":
        samples.append(
            pb.Sample(name="probe_value", value=1.0, labels={draw(RESERVED_LABEL_NAMES): "v"})
        )
        return "label_reserved", samples, fields, "is reserved"
    if defect == "core_labels":
        label = draw(st.from_regex(LABEL_NAME, fullmatch=True).filter(lambda s: s != "cpu"))
        labels = {label: "v"} if not label.startswith("__") else {"other": "v"}
        samples.append(pb.Sample(name="cpu_usage_ratio", value=0.1, labels=labels))
        return "core_labels", samples, fields, "not allowed on the core metric cpu_usage_ratio"
    if defect == "too_many_labels":
        n = draw(st.integers(17, 500))
        samples.append(
            pb.Sample(name="probe_value", value=1.0, labels={f"l{i}": "v" for i in range(n)})
        )
        return "size", samples, fields, f"{n} labels, more than 16"
    if defect == "long_label_value":
        size = draw(st.integers(1025, 100_000))
        samples.append(pb.Sample(name="probe_value", value=1.0, labels={"path": "x" * size}))
        return "label_value", samples, fields, "label path is longer than 1024"
    if defect == "duplicate_series":
        samples.append(tripwire())
        return "duplicate_series", samples, fields, "appears twice"
    if defect == "instance":
        fields["instance_id"] = draw(st.text(max_size=70).filter(lambda s: s != INSTANCE))
        return "instance_id", samples, fields, "differs from the Hello's"
    if defect == "collected_at":
        fields["collected_at_seconds"] = draw(
            st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.0])
        )
        return "time", samples, fields, "collected_at_seconds must be a positive unix time"
    if defect == "implausible_time":
        fields["collected_at_seconds"] = draw(st.sampled_from([1e300, 1.0, 5e9, 9e8]))
        return "time", samples, fields, "is not a plausible unix time"
    if defect == "host":
        fields["host"] = draw(
            st.sampled_from(
                [
                    pb.HostInfo(cpu_count=-1),
                    pb.HostInfo(boot_time_seconds=1e300),
                    pb.HostInfo(tags={f"t{i}": "v" for i in range(33)}),
                ]
            )
        )
        return "host" if fields["host"].boot_time_seconds == 0 else "time", samples, fields, "host"
    if defect == "context":
        bad = draw(st.sampled_from([math.nan, math.inf, -1.0]))
        fields["context"] = pb.Context(top_cpu=[pb.ProcessInfo(name="x", cpu_ratio=bad)])
        return "context", samples, fields, "cpu_ratio"
    n = draw(st.integers(10_001, 12_000))
    samples.extend(pb.Sample(name="probe_value", value=1.0, labels={"i": str(i)}) for i in range(n))
    return "size", samples, fields, f"{n + 1} samples, more than the limit of 10000"


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@FUZZ
@given(case=broken_report())
def test_broken_reports_are_rejected_whole_with_their_seq(
    rig: Rig, case: tuple[str, list[pb.Sample], dict[str, Any], str]
) -> None:
    reason, samples, fields, fragment = case
    defect = reason
    seq = next_seq(rig)
    before, rejected = rig.snapshot(), rig.rejected_count(reason)
    out = rig.converse([hello(), report_msg(seq, samples, **fields).SerializeToString()])
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT, (defect, out)
    assert fragment in out.details, (defect, out.details)
    assert out.details.startswith(f"report seq {seq}")
    assert out.trailers.get("tripline-rejected-seq") == str(seq)
    assert_actionable(out)
    assert [r.WhichOneof("kind") for r in out.replies] == ["welcome"]
    assert rig.snapshot() == before
    assert rig.rejected_count(reason) == rejected + 1


@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes_after_hello_get_a_clear_status(rig: Rig, data: bytes) -> None:
    before = rig.snapshot()
    counts = {r: rig.rejected_count(r) for r in ("invalid_argument", "failed_precondition")}
    out = rig.converse([hello(), data])
    assert out.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), out
    assert_actionable(out)
    assert out.details.startswith(
        (
            "message is not a valid tripline.v1.AgentMessage",
            "report seq",
            "Hello sent twice",
            "empty AgentMessage",
        )
    ), out.details
    assert rig.snapshot() == before
    reason = out.code.name.lower()
    assert rig.rejected_count(reason) == counts[reason] + 1
    assert sum(rig.rejected_count(r) for r in counts) == sum(counts.values()) + 1


@FUZZ
@given(data=st.binary(max_size=512))
def test_random_bytes_instead_of_hello(rig: Rig, data: bytes) -> None:
    before = rig.snapshot()
    out = rig.converse([data])
    if out.code == grpc.StatusCode.OK:
        # the bytes happened to be a valid Hello: Welcome, then the stream ends cleanly
        assert [r.WhichOneof("kind") for r in out.replies] == ["welcome"]
    else:
        assert out.code in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.DEADLINE_EXCEEDED,  # empty input: the stream closed before Hello
        ), out
        assert_actionable(out)
        assert out.replies == []
    assert rig.snapshot() == before


@FUZZ
@given(st.data())
def test_truncated_reports_are_refused_and_not_applied(rig: Rig, data: st.DataObject) -> None:
    samples = [tripwire(), pb.Sample(name="probe_value", value=2.0, labels={"device": "sda"})]
    whole = report_msg(next_seq(rig), samples).SerializeToString()
    cut = data.draw(st.integers(1, len(whole) - 1))
    before = rig.snapshot()
    out = rig.converse([hello(), whole[:cut]])
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT, out
    assert out.details.startswith("message is not a valid tripline.v1.AgentMessage")
    assert rig.snapshot() == before


# -- broken reports, one by one -------------------------------------------------------------


def test_invalid_utf8_in_a_label_value_is_invalid_argument(rig: Rig) -> None:
    def framed(seq: int, value: bytes, *extra: pb.Sample) -> bytes:
        sample = pb.Sample(name="utf8_metric", value=1.0, labels={"mountpoint": "PLACEHOLDER"})
        whole = report_msg(seq, [*extra, sample]).SerializeToString()
        assert whole.count(b"PLACEHOLDER") == 1
        return whole.replace(b"PLACEHOLDER", value)  # same length: the framing stays valid

    seq = next_seq(rig)
    before = rig.snapshot()
    out = rig.converse([hello(), framed(seq, b"\xffPLACEHOLDE", tripwire())])
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT
    assert out.details == (
        "message is not a valid tripline.v1.AgentMessage (Error parsing message with type "
        "'tripline.v1.AgentMessage': String field had bad UTF-8); nothing from it was "
        "applied: check the agent's version and that label values are valid UTF-8"
    )
    assert rig.snapshot() == before
    # the same bytes with a valid first byte are a good report
    out = rig.converse([hello(), framed(seq, b"XPLACEHOLDE")])
    assert out.code == grpc.StatusCode.OK, out
    assert (
        rig.app.state.agents[rig.hostile_id].value("utf8_metric", mountpoint="XPLACEHOLDE") == 1.0
    )


def test_a_100000_sample_report_is_rejected_with_its_seq(rig: Rig) -> None:
    seq = next_seq(rig)
    samples = [tripwire()] + [
        pb.Sample(name="probe_value", value=1.0, labels={"i": str(i)}) for i in range(99_999)
    ]
    message = report_msg(seq, samples).SerializeToString()
    assert len(message) < 4 * 2**20  # within the message size limit: the sample limit refuses it
    before = rig.snapshot()
    started = time.monotonic()
    out = rig.converse([hello(), message])
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT
    assert out.details == f"report seq {seq}: 100000 samples, more than the limit of 10000"
    assert out.trailers["tripline-rejected-seq"] == str(seq)
    assert time.monotonic() - started < 5
    assert rig.snapshot() == before


def test_seq_zero_is_invalid_argument_without_a_seq_to_drop(rig: Rig) -> None:
    before = rig.snapshot()
    out = rig.converse([hello(), report_msg(0, [tripwire()]).SerializeToString()])
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT
    assert out.details == "report seq must be >= 1"
    assert "tripline-rejected-seq" not in out.trailers
    assert rig.snapshot() == before


# -- accepted on purpose ---------------------------------------------------------------


def acks(out: Outcome) -> list[int]:
    return [r.ack.seq for r in out.replies if r.WhichOneof("kind") == "ack"]


def test_seq_backwards_is_acked_not_applied_and_a_jump_is_accepted(rig: Rig) -> None:
    first = next_seq(rig)
    duplicates = rig.app.metrics.reports_duplicate._value.get()
    out = rig.converse(
        [
            hello(),
            report_msg(first, [pb.Sample(name="jump_metric", value=1.0)]).SerializeToString(),
            report_msg(
                first + 1000, [pb.Sample(name="jump_metric", value=2.0)]
            ).SerializeToString(),
            report_msg(first + 500, [pb.Sample(name="jump_metric", value=3.0)]).SerializeToString(),
            report_msg(first, [pb.Sample(name="jump_metric", value=4.0)]).SerializeToString(),
        ]
    )
    assert out.code == grpc.StatusCode.OK, out
    # a jump is the agent's spool having dropped reports: accepted as the newest
    assert acks(out) == [first, first + 1000, first + 500, first]
    with rig.app.store.read() as conn:
        assert agent_instances.applied_seq(conn, rig.hostile_id, INSTANCE) == first + 1000
    assert rig.app.metrics.reports_duplicate._value.get() == duplicates + 2
    assert rig.app.state.agents[rig.hostile_id].value("jump_metric") == 2.0


def test_decreasing_and_negative_counters_are_stored_as_sent(rig: Rig) -> None:
    seq = next_seq(rig)
    values = [1000.0, 5.0, -3.0]  # a reset, then a nonsense negative: both kept as sent
    out = rig.converse(
        [hello()]
        + [
            report_msg(
                seq + i, [pb.Sample(name="x_bytes_total", value=v, labels={"device": "d"})]
            ).SerializeToString()
            for i, v in enumerate(values)
        ]
    )
    assert out.code == grpc.StatusCode.OK, out
    assert acks(out) == [seq, seq + 1, seq + 2]
    assert rig.app.state.agents[rig.hostile_id].value("x_bytes_total", device="d") == -3.0


def test_control_characters_in_label_values_are_accepted_and_escaped(rig: Rig) -> None:
    nasty = 'a\nb"c\\d\te\x00f\x1b[31mg\x85h\x7fi\u2028j'
    seq = next_seq(rig)
    sample = pb.Sample(name="ctl_metric", value=7.0, labels={"mountpoint": nasty})
    out = rig.converse([hello(), report_msg(seq, [sample]).SerializeToString()])
    assert out.code == grpc.StatusCode.OK, out
    assert acks(out) == [seq]
    body = httpx.get(f"http://127.0.0.1:{rig.app.http_port}/metrics", timeout=10).text
    found = [
        s.labels["mountpoint"]
        for family in text_string_to_metric_families(body)
        if family.name == "tripline_x_ctl_metric"
        for s in family.samples
        if s.labels.get("agent_id") == rig.hostile_id
    ]
    # C0, DEL and C1 are escaped at the edge, before anything stores or renders them;
    # quotes, backslashes and other characters are kept (the text format escapes them)
    assert found == ['a\\x0ab"c\\d\\x09e\\x00f\\x1b[31mg\\x85h\\x7fi\u2028j']


# -- protocol order ------------------------------------------------------------------


def test_report_before_hello_is_failed_precondition(rig: Rig) -> None:
    before = rig.snapshot()
    out = rig.converse([report_msg(next_seq(rig), [tripwire()]).SerializeToString()])
    assert out.code == grpc.StatusCode.FAILED_PRECONDITION
    assert out.details == "the first message on Connect must be Hello, got report"
    assert rig.snapshot() == before


def test_hello_twice_is_failed_precondition(rig: Rig) -> None:
    before = rig.snapshot()
    out = rig.converse([hello(), hello()])
    assert out.code == grpc.StatusCode.FAILED_PRECONDITION
    assert out.details == "Hello sent twice on one stream"
    assert rig.snapshot() == before


def test_a_client_that_never_sends_hello_is_closed_after_the_timeout(rig: Rig) -> None:
    release = threading.Event()
    started = time.monotonic()
    try:
        out = rig.converse([], hold_open=release)
    finally:
        release.set()
    took = time.monotonic() - started
    assert out.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert out.details == f"no Hello within {HELLO_TIMEOUT:g}s of opening the stream"
    assert HELLO_TIMEOUT <= took < HELLO_TIMEOUT + 2


def test_a_second_stream_closes_the_first_with_already_exists(rig: Rig) -> None:
    release = threading.Event()
    results: list[Outcome] = []
    older = threading.Thread(
        target=lambda: results.append(rig.converse([hello()], hold_open=release))
    )
    older.start()
    wait_until(lambda: rig.hostile_id in rig.app.service.streams)
    first = rig.app.service.streams[rig.hostile_id]
    newer = rig.converse([hello()])
    release.set()
    older.join(10)
    assert results[0].code == grpc.StatusCode.ALREADY_EXISTS
    assert results[0].details == "superseded by a newer stream of this agent"
    assert newer.code == grpc.StatusCode.OK
    assert rig.app.service.streams.get(rig.hostile_id) is not first


def test_garbage_without_a_credential_is_unauthenticated_first(rig: Rig) -> None:
    out = rig.converse([b"\xff\xff\xff"], metadata=())
    assert out.code == grpc.StatusCode.UNAUTHENTICATED
    assert out.details.startswith("missing 'authorization: Bearer <agent credential>' metadata")


# -- Hello and Enroll are validated like reports ------------------------------------------


def test_hello_host_strings_are_bounded_and_escaped(rig: Rig) -> None:
    huge = "h" * 100_000 + "\n\x1b]52;c;SGk=\x07"
    host = pb.HostInfo(hostname=huge, os="o" * 10_000, tags={"k\r\n": "v" * 10_000})
    message = pb.AgentMessage(
        hello=pb.Hello(
            instance_id=INSTANCE, sent_at_seconds=time.time(), host=host, agent_version="\x9b" * 99
        )
    )
    out = rig.converse([message.SerializeToString()])
    assert out.code == grpc.StatusCode.OK, out
    live = rig.app.state.agents[rig.hostile_id]
    assert live.hostname == "h" * 253
    with rig.app.store.read() as conn:
        stored = agents_store.get_agent(conn, rig.hostile_id)
    assert stored is not None
    assert stored.hostname == "h" * 253
    assert stored.inventory["os"] == "o" * 64
    assert stored.inventory["tags"] == {"k\\x0d\\x0a": "v" * 256}


@pytest.mark.parametrize(
    ("hello_fields", "reason", "fragment"),
    [
        ({"instance_id": INSTANCE + "\n"}, "instance_id", "Hello.instance_id"),
        ({"sent_at_seconds": 1e300}, "time", "Hello.sent_at_seconds 1e+300 is not a plausible"),
        ({"sent_at_seconds": 12.0}, "time", "Hello.sent_at_seconds 12.0 is not a plausible"),
        (
            {"host": pb.HostInfo(tags={f"t{i}": "v" for i in range(33)})},
            "host",
            "Hello.host.tags: 33 tags, more than 32",
        ),
        ({"host": pb.HostInfo(cpu_count=-4)}, "host", "Hello.host.cpu_count -4 is not in"),
    ],
    ids=["instance id newline", "sent_at 1e300", "sent_at 1970", "33 tags", "negative cpus"],
)
def test_bad_hello_fields_are_invalid_argument_naming_the_field(
    rig: Rig, hello_fields: dict[str, Any], reason: str, fragment: str
) -> None:
    fields: dict[str, Any] = {"instance_id": INSTANCE, "sent_at_seconds": time.time()}
    fields.update(hello_fields)
    before, rejected = rig.snapshot(), rig.rejected_count(reason)
    out = rig.converse([pb.AgentMessage(hello=pb.Hello(**fields)).SerializeToString()])
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT, out
    assert fragment in out.details, out.details
    assert out.replies == []
    assert rig.rejected_count(reason) == rejected + 1
    assert rig.snapshot() == before


@pytest.mark.parametrize(
    ("request_", "reason", "fragment"),
    [
        (
            pb.EnrollRequest(enrollment_token="t" * 513),
            "token",
            "enrollment_token is longer than 512",
        ),
        (
            pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(cpu_count=-1)),
            "host",
            "EnrollRequest.host.cpu_count -1",
        ),
        (
            pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(boot_time_seconds=-5.0)),
            "time",
            "EnrollRequest.host.boot_time_seconds -5.0 is not a plausible",
        ),
    ],
    ids=["long token", "negative cpus", "boot time before 2000"],
)
def test_bad_enroll_fields_are_invalid_argument_naming_the_field(
    rig: Rig, request_: pb.EnrollRequest, reason: str, fragment: str
) -> None:
    with rig.app.store.read() as conn:
        agents = len(agents_store.list_agents(conn))
    rejected = rig.rejected_count(reason)
    with pytest.raises(grpc.RpcError) as err:
        pb_grpc.CollectorStub(rig.channel).Enroll(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (err.value.details() or "")
    assert rig.rejected_count(reason) == rejected + 1
    with rig.app.store.read() as conn:
        assert len(agents_store.list_agents(conn)) == agents


def test_enroll_host_strings_are_escaped_and_bounded(rig: Rig) -> None:
    host = pb.HostInfo(hostname="pc\x1b[2J" + "x" * 1000, os="Win\r\ndows")
    enrolled = pb_grpc.CollectorStub(rig.channel).Enroll(
        pb.EnrollRequest(enrollment_token=TOKEN, host=host, site="hq\n\x07" + "s" * 500),
        timeout=10,
    )
    with rig.app.store.read() as conn:
        stored = agents_store.get_agent(conn, enrolled.agent_id)
    assert stored is not None
    assert stored.hostname == ("pc\\x1b[2J" + "x" * 1000)[:253]
    assert stored.site == ("hq\\x0a\\x07" + "s" * 500)[:128]
    assert stored.inventory["os"] == "Win\\x0d\\x0adows"


def test_a_huge_process_context_is_bounded_before_it_reaches_a_ticket(rig: Rig) -> None:
    context = pb.Context(
        top_cpu=[pb.ProcessInfo(pid=i, name=f"p{i}", cpu_ratio=0.1) for i in range(20_000)],
        top_memory=[
            pb.ProcessInfo(pid=i, name="n\x1b" * 1000, cmdline="c\n" * 200_000, username="u" * 999)
            for i in range(5)
        ],
        logged_in_users=[f"user{i}" for i in range(1000)],
    )
    seq = next_seq(rig)
    message = report_msg(seq, [tripwire()], context=context).SerializeToString()
    assert len(message) < 4 * 2**20
    out = rig.converse([hello(), message])
    assert out.code == grpc.StatusCode.OK, out
    with rig.app.store.read() as conn:
        (ticket,) = [
            t
            for t in ticketqueries.list_tickets(conn, agent_id=rig.hostile_id)
            if t.rule == "Tripwire" and t.status != "resolved"
        ]
    ctx = ticket.context
    assert len(ctx["top_cpu"]) == 20
    assert len(ctx["top_memory"]) == 5
    assert len(ctx["logged_in_users"]) == 32
    for process in ctx["top_memory"]:
        assert len(process["cmdline"]) == 1024 and "\n" not in process["cmdline"]
        assert len(process["name"]) == 256 and "\x1b" not in process["name"]
        assert len(process["username"]) == 128
