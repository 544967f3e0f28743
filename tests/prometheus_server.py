"""A real Prometheus scraping a test's collector with the shipped scrape job and recording
rules (shared by tests/e2e/test_prometheus.py and tests/integration/test_metrics_promtool.py);
skips without the binary unless TRIPLINE_REQUIRE_PROMETHEUS=1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port
from tests.deployfiles import DEPLOY, RULES


def prometheus_binary() -> str:
    path = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if path is None:
        if os.environ.get("TRIPLINE_REQUIRE_PROMETHEUS") == "1":
            pytest.fail("prometheus is required (TRIPLINE_REQUIRE_PROMETHEUS=1) but not found")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    return path


class Prometheus:
    def __init__(self, binary: str, tmp: Path, collector_http: int) -> None:
        self.port = free_port()
        self.tmp = tmp
        # The shipped scrape job, pointed at the test's collector and made fast.
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(RULES)]
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{collector_http}"]}]
        self.config = tmp / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log_path = tmp / "prometheus.log"
        self.args = [
            binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def api(self, path: str, **params: str) -> Any:
        assert self.popen is not None and self.popen.poll() is None, self.log_path.read_text()
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{path} {params}: {exc.code} {exc.read()!r}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]] | None:
        data = self.api("/api/v1/query", query=expr)
        return None if data is None else list(data["result"])
