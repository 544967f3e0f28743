"""Local checks over real gRPC: a PC script's *.prom file and a process check reach the
collector's /metrics; a malformed file next to a good one is skipped and counted, and
costs no report."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import httpx

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import agent_config, running_collector
from tripline.agent.checks import ProcessCheck
from tripline.agent.runner import AgentRunner


def _value(body: str, name: str, **labels: str) -> float | None:
    """The value of the first series of ``name`` carrying ``labels`` in an exposition."""
    for line in body.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_textfile_metrics_and_process_checks_reach_the_collector(
    tmp_path: Path, promtool: str
) -> None:
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    (textfiles / "backup.prom").write_text(
        "# HELP backup_last_success_timestamp_seconds When the nightly backup last succeeded.\n"
        "# TYPE backup_last_success_timestamp_seconds gauge\n"
        'backup_last_success_timestamp_seconds{task="nightly"} 1.7e+09\n',
        encoding="utf-8",
    )
    # half-written: the line is cut and there is no final newline
    (textfiles / "smart.prom").write_text('smart_healthy{disk="0"', encoding="utf-8")
    marker = f"tripline-local-check-{uuid.uuid4().hex}"
    check = ProcessCheck("sleeper", cmdline=re.compile(rf".* {re.escape(marker)}"))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])

    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            config = replace(
                agent_config(tmp_path / "a", app.grpc_port),
                textfile_dir=textfiles,
                process_checks=(check,),
            )
            runner = AgentRunner(config)
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            url = f"http://127.0.0.1:{app.http_port}/metrics"
            body = ""
            async with httpx.AsyncClient() as client:

                async def arrived() -> bool:
                    nonlocal body
                    body = (await client.get(url)).text
                    return (
                        _value(body, "tripline_x_backup_last_success_timestamp_seconds") is not None
                        and _value(body, "tripline_processes_matching", check="sleeper") == 1.0
                    )

                await eventually(arrived)
                sleeper.kill()
                sleeper.wait()

                async def gone() -> bool:
                    nonlocal body
                    body = (await client.get(url)).text
                    return _value(body, "tripline_processes_matching", check="sleeper") == 0.0

                await eventually(gone)
            stop.set()
            await task
            assert runner.transport.stats.reports_rejected == 0
        assert (
            _value(body, "tripline_x_backup_last_success_timestamp_seconds", task="nightly")
            == 1.7e9
        )
        assert "smart_healthy" not in body
        skipped = _value(body, "tripline_agent_textfile_files_skipped_total", reason="malformed")
        assert skipped is not None and skipped >= 1
        age = _value(body, "tripline_agent_textfile_age_seconds", file="smart.prom")
        assert age is not None and age < 600
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

    try:
        asyncio.run(scenario())
    finally:
        sleeper.kill()
        sleeper.wait()
