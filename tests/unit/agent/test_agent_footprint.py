"""What the agent keeps in memory on a PC that does not need it (issue 10, item 5).

Every module imported stays in the agent's heap for its whole life: the probe must not
import prometheus_client (http.server, urllib, multiprocessing, ~2-3 MiB) unless the
config reads textfiles. Checked on a real ``tripline-agent --once`` process, which builds
the same probe as the running agent (prober_setup.prober_for).
"""

from __future__ import annotations

from pathlib import Path

from tests.importtime import imported, loaded


def _once(tmp_path: Path, extra: str = "") -> set[str]:
    config = tmp_path / "agent.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\n{extra}")
    modules, result = imported(
        "-m", "tripline.agent.cli", "--once", "--json", "--config", str(config), cwd=tmp_path
    )
    assert '"samples"' in result.stdout
    return modules


def test_an_agent_without_textfiles_does_not_import_prometheus_client(tmp_path: Path) -> None:
    modules = _once(tmp_path)
    assert "tripline.agent.textfile" in modules  # the probe is there, its parser is not
    assert loaded(modules, "prometheus_client") == []


def test_an_agent_reading_textfiles_imports_the_parser_when_it_parses(tmp_path: Path) -> None:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    (textfiles / "backup.prom").write_text("backup_last_success_timestamp_seconds 1.7e9\n")
    modules = _once(tmp_path, f"textfile_dir: {textfiles}\n")
    assert "prometheus_client.parser" in modules


def test_the_agents_channel_does_not_probe_bandwidth() -> None:
    # BDP pings on every received ack cost gRPC-thread CPU each interval (bench/README.md)
    from tripline.agent.channel import channel_options

    assert ("grpc.http2.bdp_probe", 0) in channel_options(4 * 2**20)
