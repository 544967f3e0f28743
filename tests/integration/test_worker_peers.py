"""Workers talk to each other over loopback, never through a proxy (--workers N).

A collector host behind a corporate proxy usually has HTTP_PROXY set. urllib's default
opener honours it, so worker 0's calls to its siblings' private ports (the /metrics merge
and the /readyz probe) would go to the proxy, carrying the workers' shared secret in a
header. Here a real peer and a real "proxy" listen on loopback; the calls run in a fresh
process with the proxy variables set (urllib reads them when it builds its opener).
"""

from __future__ import annotations

import http.server
import json
import marshal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tripline.collector.metricsmerge import INTERNAL_PREFIX, SECRET_HEADER

SECRET = "s3cret-of-the-workers"


class _Recorder(http.server.ThreadingHTTPServer):
    def __init__(self, answer: dict[str, tuple[str, bytes]]) -> None:
        self.seen: list[tuple[str, str]] = []  # (path, secret header)
        self.answer = answer
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get(SECRET_HEADER, "")))
        kind, body = self.server.answer.get(self.path, ("text/plain", b"proxied"))
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def serving() -> Iterator[tuple[_Recorder, _Recorder]]:
    peer = _Recorder(
        {
            f"{INTERNAL_PREFIX}/ready": (
                "application/json",
                json.dumps({"ready": True, "reason": "ready"}).encode(),
            ),
            f"{INTERNAL_PREFIX}/owners": ("application/octet-stream", marshal.dumps({})),
        }
    )
    proxy = _Recorder({})
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (peer, proxy)]
    for thread in threads:
        thread.start()
    try:
        yield peer, proxy
    finally:
        for server in (peer, proxy):
            server.shutdown()
            server.server_close()


CALLS = """
import sys
from pathlib import Path
from tripline.collector import metricsmerge
from tripline.collector.workerready import peer_readiness
from tripline.collector.workers import WorkerRole

run_dir, secret = Path(sys.argv[1]), sys.argv[2]
role = WorkerRole(index=0, count=2, secret=secret, run_dir=run_dir, supervisor_pid=0)
print(peer_readiness(role, 1))
(base,) = role.peers()
print(metricsmerge._call(f"{base}{metricsmerge.INTERNAL_PREFIX}/owners", secret))
"""


def test_worker_calls_go_to_the_sibling_not_to_the_environments_proxy(
    serving: tuple[_Recorder, _Recorder], tmp_path: Path
) -> None:
    peer, proxy = serving
    (tmp_path / "1.port").write_text(str(peer.server_address[1]))
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    env = {
        "PATH": "/usr/bin:/bin",
        "http_proxy": proxy_url,
        "HTTP_PROXY": proxy_url,
        "no_proxy": "",
    }
    done = subprocess.run(
        [sys.executable, "-c", CALLS, str(tmp_path), SECRET],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["(True, 'ready')", "{}"]
    assert proxy.seen == [], "a worker call went through the proxy, with the workers' secret"
    assert peer.seen == [
        (f"{INTERNAL_PREFIX}/ready", SECRET),
        (f"{INTERNAL_PREFIX}/owners", SECRET),
    ]
