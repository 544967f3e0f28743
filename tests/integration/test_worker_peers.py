"""Workers talk to each other over loopback, never through a proxy, and only with calls
and answers signed with their shared secret (--workers N, collector.workerauth).

A collector host behind a corporate proxy usually has HTTP_PROXY set. urllib's default
opener honours it, so worker 0's calls to its siblings' private ports (the /metrics merge
and the /readyz probe) would go to the proxy. Here a real peer and a real "proxy" listen
on loopback; the calls run in a fresh process with the proxy variables set (urllib reads
them when it builds its opener).

A local process that takes a dead worker's port before its restart receives worker 0's
calls: it must learn nothing it can reuse (the secret never crosses the wire) and what it
answers must be refused, not decoded onto the page.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tripline.collector import metricsmerge
from tripline.collector.metricsmerge import INTERNAL_PREFIX
from tripline.collector.workerauth import NONCE_HEADER, SIGNATURE_HEADER, PeerError, signature

SECRET = "s3cret-of-the-workers"


class _Recorder(http.server.ThreadingHTTPServer):
    """Answers GETs from a table, signing each answer with ``signing_secret`` (None: no
    signature, as a process squatting a worker's port would answer)."""

    def __init__(
        self, answer: dict[str, tuple[str, bytes]], signing_secret: str | None = SECRET
    ) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []  # (path, headers)
        self.answer = answer
        self.signing_secret = signing_secret
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        self.server.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        kind, body = self.server.answer.get(self.path, ("text/plain", b"proxied"))
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        secret = self.server.signing_secret
        if secret is not None:
            nonce = self.headers.get(NONCE_HEADER, "")
            self.send_header(SIGNATURE_HEADER, signature(secret, "answer", nonce, self.path, body))
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
            f"{INTERNAL_PREFIX}/owners": ("application/json", b"{}"),
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
print(metricsmerge._owner_keys_of(f"{base}{metricsmerge.INTERNAL_PREFIX}/owners", secret))
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
    assert proxy.seen == [], "a worker call went through the proxy"
    assert [path for path, _ in peer.seen] == [
        f"{INTERNAL_PREFIX}/ready",
        f"{INTERNAL_PREFIX}/owners",
    ]
    for path, headers in peer.seen:
        nonce = headers[NONCE_HEADER]
        assert headers[SIGNATURE_HEADER] == signature(SECRET, "request", nonce, path, b"")
        assert not any(SECRET in value for value in headers.values())


def test_an_answer_not_signed_with_the_workers_secret_is_refused_not_decoded(
    tmp_path: Path,
) -> None:
    """A process on a dead worker's port answers the merge's calls with well-formed
    bodies, unsigned or signed with a secret of its own: each call fails as a PeerError
    (the worker is left out of that page, counted), the readiness probe says "not
    answering", and the calls it saw carried no secret it could sign with."""
    from tripline.collector.workerready import peer_readiness
    from tripline.collector.workers import WorkerRole

    ready = json.dumps({"ready": True, "reason": "ready"}).encode()
    owners = json.dumps({"agt_0000000000000001": [True, 1.0]}).encode()
    table = {
        f"{INTERNAL_PREFIX}/ready": ("application/json", ready),
        f"{INTERNAL_PREFIX}/owners": ("application/json", owners),
    }
    for squatter_secret in (None, "a-secret-of-its-own"):
        squatter = _Recorder(table, signing_secret=squatter_secret)
        thread = threading.Thread(target=squatter.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{squatter.server_address[1]}"
            with pytest.raises(PeerError, match="not signed with the workers' secret"):
                metricsmerge._owner_keys_of(f"{base}{INTERNAL_PREFIX}/owners", SECRET)
            (tmp_path / "1.port").write_text(str(squatter.server_address[1]))
            role = WorkerRole(index=0, count=2, secret=SECRET, run_dir=tmp_path, supervisor_pid=0)
            ok, reason = peer_readiness(role, 1)
            assert not ok and "not signed" in reason
        finally:
            squatter.shutdown()
            squatter.server_close()
        for _, headers in squatter.seen:
            assert not any(SECRET in value for value in headers.values())
