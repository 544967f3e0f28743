"""The textfile collector: parsing, the collector's edge rules applied per file, bounds,
stale and half-written files, and what is counted and logged."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from tripline.agent.probes import Prober
from tripline.agent.textfile import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_SERIES_PER_FILE,
    REASONS,
    Series,
    Textfile,
    TextfileError,
    parse,
)

NOW = 1_800_000_000.0


def test_parse_reads_the_text_exposition_format() -> None:
    text = (
        "# HELP backup_last_success_timestamp_seconds When the backup last succeeded.\n"
        "# TYPE backup_last_success_timestamp_seconds gauge\n"
        "backup_last_success_timestamp_seconds 1.7e9\n"
        "# TYPE backup_runs counter\n"
        'backup_runs_total{task="nightly"} 12\n'
        'smart_healthy{device="C:"} 1\n'
        "smart_temperature_celsius NaN\n"
    )
    assert parse(text) == (
        ("backup_last_success_timestamp_seconds", (), 1.7e9),
        ("backup_runs_total", (("task", "nightly"),), 12.0),
        ("smart_healthy", (("device", "C:"),), 1.0),
        # NaN is dropped: the collector refuses values that are not finite
    )


@pytest.mark.parametrize(
    ("text", "reason", "says"),
    [
        ("backup_ok 1", "malformed", "newline"),  # half-written
        ('backup_ok{task="a" 1\n', "malformed", "exposition format"),
        ("backup_ok 1 1700000000000\n", "malformed", "timestamps"),
        ("{,\t=\\++E\n", "malformed", "exposition format"),  # the parser's IndexError
        ("\x00\x01\n", "malformed", "exposition format"),
        ("backupOk 1\n", "malformed", "valid Prometheus name"),
        ("backup_duration_ms 1\n", "malformed", "abbreviated unit"),
        ("cpu_usage_ratio 0.1\n", "malformed", "agent's own"),
        ("process_count 3\n", "malformed", "agent's own"),
        ('backup_ok{instance="x"} 1\n', "malformed", "reserved"),
        ('backup_ok{host="x"} 1\n', "malformed", "reserved"),
        ('backup_ok{job="x"} 1\n', "malformed", "reserved"),
        ('backup_ok{task="a\\nb"} 1\n', "malformed", "control"),
        ('backup_ok{task="a"} 1\nbackup_ok{task="a"} 2\n', "malformed", "twice"),
        (
            "".join(f'x_ok{{n="{i}"}} 1\n' for i in range(MAX_SERIES_PER_FILE + 1)),
            "too_many_series",
            "more than",
        ),
    ],
)
def test_parse_refuses_what_the_collector_would(text: str, reason: str, says: str) -> None:
    with pytest.raises(TextfileError) as caught:
        parse(text)
    assert caught.value.reason == reason
    assert says in str(caught.value)


def _write(directory: Path, name: str, text: str, mtime: float = NOW - 60) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    os.utime(path, (mtime, mtime))
    return path


def _by_name(series: list[Series]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(name, labels): value for name, labels, value in series}


def _skipped(series: list[Series]) -> dict[str, float]:
    return {
        dict(labels)["reason"]: value
        for name, labels, value in series
        if name == "agent_textfile_files_skipped_total"
    }


def test_a_malformed_file_is_skipped_counted_and_logged_and_the_good_one_still_arrives(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "backup.prom", "backup_ok 1\n")
    _write(tmp_path, "smart.prom", 'smart_ok{disk="0" 1\n')
    _write(tmp_path, "notes.txt", "not a prom file\n")
    _write(tmp_path, "backup.prom.tmp", "backup_ok 0\n")  # being written: not read
    reader = Textfile(tmp_path, max_age=3600, max_series=500)
    with caplog.at_level(logging.WARNING, logger="tripline.agent.textfile"):
        first = reader.read(NOW)
        second = reader.read(NOW)
    values = _by_name(first)
    assert values[("backup_ok", ())] == 1.0
    assert not [k for k in values if k[0].startswith("smart_")]
    assert _skipped(first) == {**dict.fromkeys(REASONS, 0), "malformed": 1}
    # counted at each collection it is skipped, logged once per version of the file
    assert _skipped(second)["malformed"] == 2
    records = [r for r in caplog.records if r.getMessage() == "textfile skipped"]
    assert len(records) == 1
    assert records[0].file == "smart.prom"  # type: ignore[attr-defined]
    assert records[0].reason == "malformed"  # type: ignore[attr-defined]
    # every file's age, so a rule can see a script that stopped writing
    assert values[("agent_textfile_age_seconds", (("file", "backup.prom"),))] == 60.0
    assert values[("agent_textfile_age_seconds", (("file", "smart.prom"),))] == 60.0


def test_a_file_name_with_control_characters_is_skipped_and_logged_escaped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path, "evil\x1b[31m\n.prom", "evil_ok 1\n")
    reader = Textfile(tmp_path, max_age=3600, max_series=500)
    with caplog.at_level(logging.WARNING, logger="tripline.agent.textfile"):
        series = reader.read(NOW)
    assert _skipped(series)["file_name"] == 1
    assert ("evil_ok", ()) not in _by_name(series)
    logged = caplog.records[0].file  # type: ignore[attr-defined]
    assert "\x1b" not in logged and "\n" not in logged
    assert "\\x1b" in logged


def test_a_stale_file_is_dropped_and_counted_but_its_age_still_shown(tmp_path: Path) -> None:
    _write(tmp_path, "old.prom", "old_ok 1\n", mtime=NOW - 7200)
    _write(tmp_path, "new.prom", "new_ok 1\n", mtime=NOW - 10)
    series = Textfile(tmp_path, max_age=3600, max_series=500).read(NOW)
    values = _by_name(series)
    assert ("old_ok", ()) not in values
    assert values[("new_ok", ())] == 1.0
    assert _skipped(series)["stale"] == 1
    assert values[("agent_textfile_age_seconds", (("file", "old.prom"),))] == 7200.0


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    _write(tmp_path, "job.prom", "jobeta_ok 1\n", mtime=NOW - 30)
    reader = Textfile(tmp_path, max_age=3600, max_series=500)
    assert _by_name(reader.read(NOW))[("jobeta_ok", ())] == 1.0
    _write(tmp_path, "job.prom", "jobeta_ok 0\n", mtime=NOW - 5)
    assert _by_name(reader.read(NOW))[("jobeta_ok", ())] == 0.0
    (tmp_path / "job.prom").unlink()
    assert ("jobeta_ok", ()) not in _by_name(reader.read(NOW))


def test_bounds_size_files_and_total_series(tmp_path: Path) -> None:
    _write(tmp_path, "a_big.prom", "#" * (MAX_FILE_BYTES + 1) + "\n")
    _write(tmp_path, "b_one.prom", "".join(f'beta_ok{{n="{i}"}} 1\n' for i in range(8)))
    # the second file would pass the total of 10 series: skipped whole, not cut
    _write(tmp_path, "c_two.prom", "".join(f'gamma_ok{{n="{i}"}} 1\n' for i in range(8)))
    # a series an earlier file already gave: the later file is skipped
    _write(tmp_path, "d_dup.prom", 'beta_ok{n="0"} 5\n')
    series = Textfile(tmp_path, max_age=3600, max_series=10).read(NOW)
    values = _by_name(series)
    assert sum(1 for name, _ in values if name == "beta_ok") == 8
    assert not [name for name, _ in values if name == "gamma_ok"]
    assert values[("beta_ok", (("n", "0"),))] == 1.0
    assert _skipped(series) == {
        **dict.fromkeys(REASONS, 0),
        "too_large": 1,
        "too_many_series": 1,
        "duplicate_series": 1,
    }


def test_at_most_max_files_are_read(tmp_path: Path) -> None:
    for i in range(MAX_FILES + 3):
        _write(tmp_path, f"f{i:04d}.prom", f"f{i:04d}_ok 1\n")
    series = Textfile(tmp_path, max_age=3600, max_series=10_000).read(NOW)
    assert _skipped(series)["too_many_files"] == 3
    assert sum(1 for name, _, _ in series if name.endswith("_ok")) == MAX_FILES


def test_the_prober_sends_textfile_samples_and_counts_a_missing_directory(
    tmp_path: Path,
) -> None:
    _write(tmp_path, "backup.prom", "backup_ok 1\n", mtime=time.time() - 5)
    prober = Prober(
        collect_processes=False, textfile=Textfile(tmp_path, max_age=3600, max_series=500)
    )
    c = prober.collect(time.time())
    assert [s.value for s in c.samples if s.name == "backup_ok"] == [1.0]
    gone = Prober(
        collect_processes=False,
        textfile=Textfile(tmp_path / "missing", max_age=3600, max_series=500),
    )
    assert gone.collect(time.time()).probe_errors["textfile"] == 1


def test_the_agent_warns_at_start_about_a_missing_directory_and_foreign_checks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    from tripline.agent.config import load_agent_config
    from tripline.agent.prober_setup import prober_for

    flags = {
        "state_dir": tmp_path / "state",
        "textfile_dir": tmp_path / "not-yet",
        "service_checks": ["Spooler"],
    }
    config = load_agent_config(None, environ={}, flags=flags)
    with caplog.at_level(logging.WARNING, logger="tripline.agent.runner"):
        prober = prober_for(config)
    messages = [r.getMessage() for r in caplog.records]
    assert any("textfile_dir is not a directory" in m for m in messages), messages
    if sys.platform != "win32":
        assert any("service_checks are for Windows" in m for m in messages), messages
    (tmp_path / "not-yet").mkdir()
    _write(tmp_path / "not-yet", "late.prom", "late_ok 1\n", mtime=time.time())
    collected = prober.collect(time.time())
    assert [s.value for s in collected.samples if s.name == "late_ok"] == [1.0]
