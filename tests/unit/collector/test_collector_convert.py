"""collector/convert.py: decoding agent messages, and every rejection a person reads."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tripline.collector.convert import (
    MAX_INT64,
    Report,
    decode_hello,
    decode_report,
)
from tripline.collector.seriescheck import METRIC_NAME
from tripline.collector.wirecheck import InvalidMessage
from tripline.v1 import tripline_pb2 as pb

INSTANCE = "i-1"
T = 1_700_000_000.5
MAX_SAMPLES = 4


def report(*samples: pb.Sample, seq: int = 1, **fields: object) -> pb.Report:
    values: dict[str, object] = {"instance_id": INSTANCE, "collected_at_seconds": T, **fields}
    return pb.Report(seq=seq, samples=list(samples), **values)  # type: ignore[arg-type]


def sample(name: str = "cpu_usage_ratio", value: float = 0.5, **labels: str) -> pb.Sample:
    return pb.Sample(name=name, labels=labels, value=value)


def decode(msg: pb.Report) -> Report:
    return decode_report(msg, instance_id=INSTANCE, max_samples=MAX_SAMPLES)


def test_good_report_decodes_to_plain_data() -> None:
    msg = report(
        sample("filesystem_used_ratio", 0.91, mountpoint="/", fstype="ext4", device="/dev/sda1"),
        sample("load1", 1.5),
        seq=7,
        spool_dropped_reports_total=3,
        context=pb.Context(
            top_cpu=[pb.ProcessInfo(pid=42, name="chrome.exe", cpu_ratio=1.5)],
            logged_in_users=["alice"],
        ),
    )
    decoded = decode_report(msg, instance_id=INSTANCE, max_samples=MAX_SAMPLES)
    assert decoded.seq == 7
    assert decoded.instance_id == INSTANCE
    assert decoded.collected_at == T
    assert decoded.dropped_total == 3
    assert decoded.host is None
    # labels sorted by name: one spelling of each series key
    assert decoded.samples == (
        (
            "filesystem_used_ratio",
            (("device", "/dev/sda1"), ("fstype", "ext4"), ("mountpoint", "/")),
            0.91,
        ),
        ("load1", (), 1.5),
    )
    assert decoded.context == {
        "top_cpu": [{"pid": 42, "name": "chrome.exe", "cpu_ratio": 1.5}],
        "logged_in_users": ["alice"],
    }


def test_report_with_inventory_carries_the_host() -> None:
    host = pb.HostInfo(hostname="pc-01", os="Windows", cpu_count=8, tags={"room": "101"})
    decoded = decode(report(sample(), host=host))
    assert decoded.host == {
        "hostname": "pc-01",
        "os": "Windows",
        "cpu_count": 8,
        "tags": {"room": "101"},
    }


def test_same_name_with_other_labels_is_another_series() -> None:
    decoded = decode(report(sample(cpu="0"), sample(cpu="1"), sample()))
    assert len(decoded.samples) == 3


LONG = "x" * 1025
SEVENTEEN = {f"l{i}": "v" for i in range(17)}

# (case id, report, exact message, seq carried by the error)
BAD_REPORTS: list[tuple[str, pb.Report, str, int | None]] = [
    ("seq 0", report(sample(), seq=0), "report seq must be >= 1", 0),
    (
        "seq beyond int64",
        report(sample(), seq=MAX_INT64 + 1),
        f"report seq {MAX_INT64 + 1}: seq must be at most {MAX_INT64}",
        MAX_INT64 + 1,
    ),
    (
        "wrong instance id",
        report(sample(), seq=3, instance_id="i-2"),
        "report seq 3: instance_id 'i-2' differs from the Hello's 'i-1'",
        3,
    ),
    (
        "collected_at zero",
        report(sample(), collected_at_seconds=0),
        "report seq 1: collected_at_seconds must be a positive unix time",
        1,
    ),
    (
        "collected_at nan",
        report(sample(), collected_at_seconds=math.nan),
        "report seq 1: collected_at_seconds must be a positive unix time",
        1,
    ),
    (
        "dropped beyond int64",
        report(sample(), spool_dropped_reports_total=2**64 - 1),
        f"report seq 1: spool_dropped_reports_total must be at most {MAX_INT64}",
        1,
    ),
    (
        "too many samples",
        report(*(sample(cpu=str(i)) for i in range(5))),
        "report seq 1: 5 samples, more than the limit of 4",
        1,
    ),
    (
        "metric name with a space",
        report(sample("load1"), sample("cpu usage")),
        "report seq 1, sample #1: metric name 'cpu usage' is not a valid Prometheus name "
        "([a-z_][a-z0-9_]*, at most 200 characters)",
        1,
    ),
    (
        "metric name starting with a digit",
        report(sample("1load")),
        "report seq 1, sample #0: metric name '1load' is not a valid Prometheus name "
        "([a-z_][a-z0-9_]*, at most 200 characters)",
        1,
    ),
    (
        "empty metric name",
        report(sample("")),
        "report seq 1, sample #0: metric name '' is not a valid Prometheus name "
        "([a-z_][a-z0-9_]*, at most 200 characters)",
        1,
    ),
    (
        "metric name too long (cut to 80 in the message)",
        report(sample("m" * 201)),
        f"report seq 1, sample #0: metric name '{'m' * 80}' is not a valid Prometheus name "
        "([a-z_][a-z0-9_]*, at most 200 characters)",
        1,
    ),
    (
        "label name with a dash",
        report(sample(**{"cpu-id": "0"})),
        "report seq 1, sample #0 (cpu_usage_ratio): label name 'cpu-id' is not a valid "
        "Prometheus label name ([a-z_][a-z0-9_]*, at most 200 characters)",
        1,
    ),
    (
        "reserved label name",
        report(sample(__name__="x")),
        "report seq 1, sample #0 (cpu_usage_ratio): label name '__name__' is reserved (the "
        "collector and Prometheus set agent_id, customer, host, instance, job, site, exported_* "
        "and __* on every series); rename it in the agent",
        1,
    ),
    (
        "nan value",
        report(sample("load1", math.nan)),
        "report seq 1, sample #0 (load1): value nan is not finite",
        1,
    ),
    (
        "infinite value",
        report(sample("load1"), sample("load5", -math.inf)),
        "report seq 1, sample #1 (load5): value -inf is not finite",
        1,
    ),
    (
        "too many labels",
        report(sample("temperature_celsius", 40.0, **SEVENTEEN)),
        "report seq 1, sample #0 (temperature_celsius): 17 labels, more than 16",
        1,
    ),
    (
        "label value too long",
        report(sample("filesystem_used_ratio", mountpoint=LONG)),
        "report seq 1, sample #0 (filesystem_used_ratio): label mountpoint is longer than 1024 "
        "characters",
        1,
    ),
    (
        "duplicate series",
        report(sample(cpu="0"), sample(value=0.7), sample(value=0.9, cpu="0")),
        "report seq 1, sample #2: series cpu_core_usage_ratio{'cpu': '0'} appears twice",
        1,
    ),
]


@pytest.mark.parametrize(
    ("msg", "message", "seq"),
    [case[1:] for case in BAD_REPORTS],
    ids=[case[0] for case in BAD_REPORTS],
)
def test_bad_report_is_rejected_whole_with_its_reason(
    msg: pb.Report, message: str, seq: int | None
) -> None:
    with pytest.raises(InvalidMessage) as err:
        decode(msg)
    assert str(err.value) == message
    assert err.value.seq == seq


def test_limits_are_inclusive() -> None:
    at_limits = report(
        sample("m" * 200, mountpoint="x" * 1024, **{f"l{i}": "v" for i in range(15)}),
        *(sample(cpu=str(i)) for i in range(3)),
        seq=MAX_INT64,
        spool_dropped_reports_total=MAX_INT64,
    )
    assert len(decode(at_limits).samples) == 4


def test_hello_decodes() -> None:
    hello = decode_hello(
        pb.Hello(
            agent_version="v" * 100,
            instance_id=INSTANCE,
            sent_at_seconds=T,
            host=pb.HostInfo(hostname='pc "q"\n', memory_total_bytes=2**34),
        )
    )
    assert hello.instance_id == INSTANCE
    assert hello.agent_version == "v" * 64
    assert hello.sent_at == T
    # uint64 fields come out of MessageToDict as strings (JSON mapping of protobuf)
    # control characters are escaped before anything stores or renders them
    assert hello.host == {"hostname": 'pc "q"\\x0a', "memory_total_bytes": str(2**34)}


@pytest.mark.parametrize(
    ("hello", "message"),
    [
        (
            pb.Hello(sent_at_seconds=T),
            "Hello.instance_id '' must be 1..64 characters of A-Z a-z 0-9 . _ : -",
        ),
        (
            pb.Hello(instance_id="i" * 65, sent_at_seconds=T),
            f"Hello.instance_id {'i' * 65!r} must be 1..64 characters of A-Z a-z 0-9 . _ : -",
        ),
        (
            pb.Hello(instance_id=INSTANCE, sent_at_seconds=math.inf),
            "Hello.sent_at_seconds must be a finite unix time",
        ),
    ],
    ids=["empty instance id", "long instance id", "infinite sent_at"],
)
def test_bad_hello(hello: pb.Hello, message: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        decode_hello(hello)
    assert str(err.value) == message
    assert err.value.seq is None


# -- property: any Report decodes or is rejected as InvalidMessage ------------------------

names = st.one_of(
    st.sampled_from(["cpu_usage_ratio", "filesystem_used_ratio", "_x", "a" * 201]),
    st.from_regex(METRIC_NAME, fullmatch=True),
    st.text(max_size=12),
)
label_names = st.one_of(
    st.sampled_from(["mountpoint", "device", "cpu", "__reserved", "bad-name", ""]),
    st.text(max_size=8),
)
label_values = st.one_of(st.text(max_size=16), st.just("v" * 1025))
floats = st.floats(allow_nan=True, allow_infinity=True)
samples = st.builds(
    pb.Sample,
    name=names,
    labels=st.dictionaries(label_names, label_values, max_size=18),
    value=floats,
)
processes = st.builds(
    pb.ProcessInfo,
    pid=st.integers(-(2**31), 2**31 - 1),
    name=st.text(max_size=10),
    cpu_ratio=floats,
    memory_rss_bytes=st.integers(0, 2**64 - 1),
)
hosts = st.builds(
    pb.HostInfo,
    hostname=st.text(max_size=20),
    memory_total_bytes=st.integers(0, 2**64 - 1),
    boot_time_seconds=floats,
    tags=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


def _report(
    instance_id: str,
    seq: int,
    collected_at: float,
    items: list[pb.Sample],
    dropped: int,
    host: pb.HostInfo | None,
    top: list[pb.ProcessInfo],
) -> pb.Report:
    msg = pb.Report(
        instance_id=instance_id,
        seq=seq,
        collected_at_seconds=collected_at,
        samples=items,
        spool_dropped_reports_total=dropped,
        context=pb.Context(top_cpu=top),
    )
    if host is not None:
        msg.host.CopyFrom(host)
    # what the servicer sees went over the wire
    return pb.Report.FromString(msg.SerializeToString())


reports = st.builds(
    _report,
    instance_id=st.sampled_from([INSTANCE, "i-2", ""]),
    seq=st.one_of(st.integers(0, 3), st.integers(0, 2**64 - 1)),
    collected_at=st.one_of(st.just(T), floats),
    items=st.lists(st.one_of(samples, st.just(sample()), st.just(sample(cpu="0"))), max_size=6),
    dropped=st.one_of(st.just(0), st.integers(0, 2**64 - 1)),
    host=st.none() | hosts,
    top=st.lists(processes, max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(reports)
def test_any_report_decodes_or_raises_invalid_message(msg: pb.Report) -> None:
    try:
        decoded = decode(msg)
    except InvalidMessage as exc:
        assert str(exc)
        if msg.seq > 0:
            assert exc.seq == msg.seq
        return
    # what passes is safe to store and expose
    assert 1 <= decoded.seq <= MAX_INT64
    keys = [(name, labels) for name, labels, _ in decoded.samples]
    assert len(keys) == len(set(keys)) <= MAX_SAMPLES
    for name, labels, value in decoded.samples:
        assert METRIC_NAME.match(name)
        assert math.isfinite(value)
        assert list(labels) == sorted(labels)
        assert all(not label.startswith("__") and len(v) <= 1024 for label, v in labels)


def test_process_count_from_old_agents_is_processes() -> None:
    assert decode(report(sample("process_count", 7.0))).samples == (("processes", (), 7.0),)
    with pytest.raises(InvalidMessage) as err:
        decode(report(sample("process_count", 7.0), sample("processes", 8.0)))
    assert err.value.reason == "duplicate_series"


@pytest.mark.parametrize(
    "label", ["agent_id", "host", "customer", "site", "job", "instance", "exported_customer"]
)
def test_labels_the_collector_or_prometheus_set_are_refused(label: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        decode(report(sample("custom_up", 1.0, **{label: "x"})))
    assert err.value.reason == "label_reserved"
    assert f"label name {label!r} is reserved" in str(err.value)


def test_core_families_accept_only_their_catalogue_labels() -> None:
    ok = decode(report(sample("filesystem_used_ratio", 0.5, mountpoint="/", device="sda")))
    assert len(ok.samples) == 1
    with pytest.raises(InvalidMessage) as err:
        decode(report(sample("memory_used_ratio", 0.5, mountpoint="/")))
    assert err.value.reason == "core_labels"
    assert "label(s) mountpoint not allowed on the core metric memory_used_ratio" in str(err.value)


@pytest.mark.parametrize("name", ["load1\n", "load1\r", "\nload1", "lo ad1", "load1\x00"])
def test_metric_names_are_matched_whole(name: str) -> None:
    with pytest.raises(InvalidMessage) as err:
        decode(report(sample(name, 1.0)))
    assert err.value.reason == "metric_name"


def test_oversized_context_is_cut_and_escaped_on_decode() -> None:
    context = pb.Context(
        top_cpu=[pb.ProcessInfo(pid=i, name=f"p\x1b{i}", cpu_ratio=0.5) for i in range(500)],
        top_memory=[pb.ProcessInfo(pid=1, cmdline="x\n" * 5000, username="u" * 500)],
        logged_in_users=["bob\r"] * 100,
    )
    decoded = decode(report(sample(), context=context))
    assert len(decoded.context["top_cpu"]) == 20
    assert decoded.context["top_cpu"][1]["name"] == "p\\x1b1"
    (process,) = decoded.context["top_memory"]
    assert process["cmdline"] == ("x\\x0a" * 5000)[:1024]
    assert len(process["username"]) == 128
    assert decoded.context["logged_in_users"] == ["bob\\x0d"] * 32


def test_older_agents_shapes_arrive_in_todays_names() -> None:
    """For one release the edge maps what agents in the field still send: per-CPU figures
    under `cpu_usage_ratio{cpu}`, temperatures labelled `{sensor, label}`, `process_count`."""
    decoded = decode(
        report(
            sample(value=0.5),
            sample(value=0.25, cpu="1"),
            pb.Sample(
                name="temperature_celsius",
                value=48.0,
                labels={"sensor": "coretemp", "label": "Core 0"},
            ),
            pb.Sample(name="process_count", value=212.0),
        )
    )
    assert [(name, labels) for name, labels, _ in decoded.samples] == [
        ("cpu_usage_ratio", ()),
        ("cpu_core_usage_ratio", (("cpu", "1"),)),
        ("temperature_celsius", (("chip", "coretemp"), ("sensor", "Core 0"))),
        ("processes", ()),
    ]
