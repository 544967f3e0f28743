"""collector/exposition.py: agent series rendered as Prometheus text, parsed back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tripline.collector.exposition import SeriesExposition, exposed_name
from tripline.collector.state import AgentLive, LiveState

T0 = 1_700_000_000.0
TARGET = {"agent_id": "a-1", "host": "pc-01", "customer": "acme", "site": "hq"}
ROOT = (("device", "/dev/sda1"), ("fstype", "ext4"), ("mountpoint", "/"))


class Scrape:
    """One agent in a LiveState, exposed by its own SeriesExposition."""

    def __init__(self, is_up: Callable[[AgentLive], bool] = lambda live: True) -> None:
        self.state = LiveState(window=900.0)
        self.live = self.state.ensure("a-1", customer="acme", hostname="pc-01", site="hq")
        self.exposition = SeriesExposition(self.state, is_up)

    def record(self, *samples: tuple[str, tuple[tuple[str, str], ...], float]) -> None:
        self.state.record(self.live, T0, samples)
        self.live.last_seen = T0
        self.exposition.update(self.live)

    def text(self) -> str:
        return self.exposition.render().decode()

    def families(self) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
        """name -> (type, [(sample name, labels, value)]) as a scraper parses it."""
        return {
            f.name: (f.type, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(self.text())
        }

    def value(self, sample_name: str, **labels: str) -> float | None:
        wanted = {**TARGET, **labels}
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                if sample.name == sample_name and sample.labels == wanted:
                    return float(sample.value)
        return None


@pytest.fixture
def scrape() -> Scrape:
    return Scrape()


def test_gauges_are_tripline_name_with_target_labels(scrape: Scrape) -> None:
    scrape.record(("memory_used_ratio", (), 0.42), ("filesystem_used_ratio", ROOT, 0.9))
    assert scrape.value("tripline_memory_used_ratio") == 0.42
    assert scrape.value("tripline_filesystem_used_ratio", **dict(ROOT)) == 0.9
    families = scrape.families()
    assert families["tripline_memory_used_ratio"] == (
        "gauge",
        [("tripline_memory_used_ratio", TARGET, 0.42)],
    )
    assert "# HELP tripline_memory_used_ratio Memory in use as a ratio (0-1).\n" in scrape.text()


def test_counters_keep_total(scrape: Scrape) -> None:
    scrape.record(("disk_read_bytes_total", (("device", "sda"),), 1234.0))
    text = scrape.text()
    assert "# TYPE tripline_disk_read_bytes_total counter\n" in text
    assert scrape.value("tripline_disk_read_bytes_total", device="sda") == 1234.0
    kind, samples = scrape.families()["tripline_disk_read_bytes"]
    assert kind == "counter"
    assert [name for name, _, _ in samples] == ["tripline_disk_read_bytes_total"]


def test_extra_metric_is_untyped_under_its_own_prefix(scrape: Scrape) -> None:
    scrape.record(("printer_jobs_queued", (), 3.0))
    text = scrape.text()
    assert "# TYPE tripline_x_printer_jobs_queued untyped\n" in text
    assert (
        "# HELP tripline_x_printer_jobs_queued Extra agent metric printer_jobs_queued "
        "(not in the catalogue).\n"
    ) in text
    assert scrape.value("tripline_x_printer_jobs_queued") == 3.0


def test_series_with_a_target_label_is_never_exposed_twice_labelled(scrape: Scrape) -> None:
    # The edge refuses these labels (test_collector_convert); a series that reached live
    # state some other way is left out rather than breaking the whole page.
    scrape.record(
        ("container_up", (("host", "docker-7"),), 1.0),
        ("job_state", (("instance", "x"), ("job", "y")), 1.0),
        ("histogramish", (("le", "0.5"), ("quantile", "0.9")), 2.0),
    )
    text = scrape.text()
    assert "container_up" not in text
    assert "job_state" not in text
    assert scrape.value("tripline_x_histogramish", le="0.5", quantile="0.9") == 2.0


def test_every_agent_has_up_last_report_and_dropped(scrape: Scrape) -> None:
    scrape.record(("load1", (), 0.1))
    scrape.live.dropped_reports_total = 7
    assert scrape.value("tripline_agent_up") == 1.0
    assert scrape.value("tripline_agent_last_report_timestamp_seconds") == T0
    assert scrape.value("tripline_agent_spool_dropped_reports_total") == 7.0


def test_agent_up_follows_is_up() -> None:
    verdict = {"a-1": True}
    scrape = Scrape(is_up=lambda live: verdict[live.agent_id])
    scrape.record(("load1", (), 0.1))
    assert scrape.value("tripline_agent_up") == 1.0
    verdict["a-1"] = False
    assert scrape.value("tripline_agent_up") == 0.0
    # a silent agent's series go stale, as Prometheus does with a target that vanished:
    # a dashboard shows a gap, not an old value that looks current; `up` stays
    assert scrape.value("tripline_load1") is None
    verdict["a-1"] = True
    assert scrape.value("tripline_load1") == 0.1


def test_agent_that_never_reported_is_down_without_a_timestamp() -> None:
    scrape = Scrape(is_up=lambda live: live.last_seen is not None)
    assert scrape.value("tripline_agent_up") == 0.0
    assert scrape.value("tripline_agent_last_report_timestamp_seconds") is None
    assert "tripline_agent_last_report_timestamp_seconds{" not in scrape.text()


def test_several_agents_share_one_family() -> None:
    scrape = Scrape()
    other = scrape.state.ensure("a-2", customer="globex", hostname="pc-02", site="")
    scrape.record(("load1", (), 0.1))
    scrape.state.record(other, T0, [("load1", (), 0.2)])
    scrape.exposition.update(other)
    kind, samples = scrape.families()["tripline_load1"]
    assert kind == "gauge"
    assert sorted((labels["agent_id"], labels["customer"], v) for _, labels, v in samples) == [
        ("a-1", "acme", 0.1),
        ("a-2", "globex", 0.2),
    ]
    assert scrape.text().count("# TYPE tripline_load1 gauge") == 1


def test_label_values_are_escaped(scrape: Scrape) -> None:
    host = 'pc "q" \\ back\nslash'
    scrape.live.hostname = host
    mount = '/mnt/we"ird\\path\nx'
    scrape.record(("filesystem_used_ratio", (("mountpoint", mount),), 0.5))
    assert 'mountpoint="/mnt/we\\"ird\\\\path\\nx"' in scrape.text()
    _, samples = scrape.families()["tripline_filesystem_used_ratio"]
    # a target label value with a control character (a row stored before the edge escaped
    # them) is escaped here too; agent label values arrive escaped from the edge
    escaped_host = host.replace("\n", "\\x0a")
    assert [(labels["host"], labels["mountpoint"]) for _, labels, _ in samples] == [
        (escaped_host, mount)
    ]


def test_extras_with_shadowing_suffixes_keep_their_names_untyped(scrape: Scrape) -> None:
    scrape.record(
        ("processes", (), 212.0),
        ("print_job_count", (), 3.0),
        ("thing_sum", (), 1.0),
        ("queue_bucket", (), 2.0),
        ("memory_used_ratio_total", (), 4.0),  # would shadow the core gauge as a counter
        ("memory_used_ratio", (), 0.5),
        ("disk_read_bytes", (("device", "sda"),), 5.0),  # the core counter without _total
        ("disk_read_bytes_total", (("device", "sda"),), 6.0),
    )
    families = scrape.families()
    assert families["tripline_processes"][0] == "gauge"
    assert families["tripline_memory_used_ratio"][0] == "gauge"
    assert families["tripline_disk_read_bytes"][0] == "counter"
    for extra in (
        "print_job_count",
        "thing_sum",
        "queue_bucket",
        "memory_used_ratio_total",
        "disk_read_bytes",
    ):
        assert f"# TYPE tripline_x_{extra} untyped\n" in scrape.text()
    assert scrape.value("tripline_x_memory_used_ratio_total") == 4.0
    assert scrape.value("tripline_memory_used_ratio") == 0.5
    assert "# HELP tripline_processes Number of processes.\n" in scrape.text()


@pytest.mark.parametrize(
    ("name", "exposed"),
    [
        ("cpu_usage_ratio", ("tripline_cpu_usage_ratio", "gauge")),
        ("network_receive_bytes_total", ("tripline_network_receive_bytes", "counter")),
        ("process_count", ("tripline_processes", "gauge")),
        ("processes", ("tripline_processes", "gauge")),
        ("x_count", ("tripline_x_x_count", "untyped")),
        ("load1_total", ("tripline_x_load1_total", "untyped")),
    ],
)
def test_exposed_name(name: str, exposed: tuple[str, str]) -> None:
    assert exposed_name(name) == exposed


def test_agent_series_cannot_shadow_the_collectors_own_families(scrape: Scrape) -> None:
    scrape.live.dropped_reports_total = 2
    scrape.record(
        ("agent_up", (), 0.0),
        ("agent_spool_dropped_reports_total", (), 99.0),
        ("agent_last_report_timestamp_seconds", (), 1.0),
        ("collector_reports_applied_total", (), 5.0),
        ("load1", (), 0.1),
    )
    text = scrape.text()
    for family in (
        "tripline_agent_up",
        "tripline_agent_spool_dropped_reports_total",
        "tripline_agent_last_report_timestamp_seconds",
    ):
        assert text.count(f"# HELP {family} ") == 1
    assert scrape.value("tripline_agent_up") == 1.0
    assert scrape.value("tripline_agent_spool_dropped_reports_total") == 2.0
    assert "tripline_collector_reports_applied" not in text
    assert scrape.value("tripline_load1") == 0.1


def test_type_comes_from_the_catalogue_not_from_who_speaks_first() -> None:
    scrape = Scrape()
    other = scrape.state.ensure("a-2", customer="globex", hostname="pc-02", site="")
    # a hostile agent speaks first with a counter and a gauge named like core families
    scrape.record(("jobs", (), 1.0), ("jobs_total", (), 10.0), ("load1_total", (), 9.0))
    scrape.state.record(other, T0, [("load1", (), 0.2), ("jobs", (), 2.0)])
    other.last_seen = T0
    scrape.exposition.update(other)
    families = scrape.families()
    kind, samples = families["tripline_load1"]
    assert kind == "gauge"
    assert [(name, labels["agent_id"], v) for name, labels, v in samples] == [
        ("tripline_load1", "a-2", 0.2)
    ]
    assert families["tripline_x_jobs"][0] == "unknown"  # untyped, as the parser names it
    assert len(families["tripline_x_jobs"][1]) == 2
    assert scrape.value("tripline_x_jobs_total") == 10.0


def test_only_current_series_are_exposed(scrape: Scrape) -> None:
    usb = (("mountpoint", "/media/usb"),)
    scrape.state.record(scrape.live, T0, [("filesystem_used_ratio", usb, 0.1)])
    scrape.state.record(scrape.live, T0 + 10, [("filesystem_used_ratio", ROOT, 0.5)])
    scrape.exposition.update(scrape.live)
    assert scrape.value("tripline_filesystem_used_ratio", **dict(usb)) is None
    assert scrape.value("tripline_filesystem_used_ratio", **dict(ROOT)) == 0.5


def test_exposition_stays_off_the_global_registry() -> None:
    from prometheus_client import REGISTRY

    Scrape().record(("load1", (), 0.1))
    assert REGISTRY.get_sample_value("tripline_agent_up", TARGET) is None


def test_an_agents_text_is_bounded_and_what_is_left_out_is_counted() -> None:
    state = LiveState(window=900.0)
    live = state.ensure("a-1", customer="acme", hostname="pc-01", site="hq")
    left_out: list[int] = []
    exposition = SeriesExposition(
        state,
        lambda live: True,
        max_bytes_per_agent=20_000,
        on_truncated=lambda live, n: left_out.append(n),
    )
    samples = [("custom_metric", (("path", f"{i:04d}" + "x" * 900),), float(i)) for i in range(100)]
    state.record(live, T0, samples)
    assert exposition.update(live, samples) > 0
    agent_text = exposition.render().decode().split("# HELP tripline_x_custom_metric", 1)[1]
    assert 15_000 < len(agent_text) <= 20_000
    kept = agent_text.count("\ntripline_x_custom_metric{")
    assert left_out == [100 - kept]
    # the series kept are the first the agent sent
    assert 'path="0000' in agent_text and f'path="{kept - 1:04d}' in agent_text
