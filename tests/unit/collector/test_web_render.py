"""The ticket page's templates on their own: any ticket JSON renders, a `snapshot` when
present, whatever text it holds stays text, and only http(s) runbooks become links."""

from __future__ import annotations

from typing import Any

import pytest

from tripline.collector.web import render

HOSTILE = "<script>alert(1)</script>"


def ticket(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 7,
        "customer": "acme",
        "agent_id": "agt_1",
        "hostname": HOSTILE,
        "rule": "DiskFull",
        "labels": {"mountpoint": HOSTILE},
        "status": "open",
        "severity": "warning",
        "tier": 1,
        "summary": f"{HOSTILE} is full",
        "runbook": None,
        "value": 0.95,
        "threshold": 0.9,
        "context": {"filesystems": [{"mountpoint": "/", "used_ratio": 0.95}], "odd": HOSTILE},
        "opened_at": 1_700_000_000.0,
        "acknowledged_at": None,
        "acknowledged_by": None,
        "resolved_at": None,
        "resolved_by": None,
        "resolved_value": None,
        "resolve_reason": None,
        "reopen_count": 0,
        "flapping": False,
        "events": [
            {"seq": 1, "at": 1_700_000_000.0, "kind": "opened", "actor": "tripline",
             "message": HOSTILE, "data": {}},
        ],
    }  # fmt: skip
    return {**base, **extra}


def page(**values: Any) -> str:
    env = render.environment()
    defaults = {"base": "/ui", "csrf": "c" * 64, "agent": None, "done": None, "error": None}
    return env.get_template("ticket.html").render(**{**defaults, **values})


def test_a_snapshot_renders_when_present_and_its_text_stays_text() -> None:
    snapshot = {
        "taken_at": 1_700_000_000.0,
        "processes": [{"pid": 1, "name": HOSTILE}, {"pid": 2, "name": "svchost.exe"}],
        "deep": {"a": {"b": {"c": {"d": {"e": {"f": HOSTILE}}}}}},
    }
    html = page(ticket=ticket(snapshot=snapshot))
    assert 'id="snapshot"' in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # a list of flat objects is a table with a column per key
    assert "<th>name</th>" in html and "<td>svchost.exe</td>" in html
    # nesting past MAX_DEPTH is printed as (escaped) JSON, not followed further
    assert "&#34;f&#34;: &#34;&lt;script&gt;" in html

    assert 'id="snapshot"' not in page(ticket=ticket())


@pytest.mark.parametrize(
    ("runbook", "link"),
    [
        ("https://wiki.example/disk-full", True),
        ("http://wiki.example/x?y=1", True),
        ("javascript:alert(1)", False),
        ("https://wiki.example/a b", False),  # text that merely starts with a URL
        ('https://x.example/"onmouseover="alert(1)', False),
        ("Empty the recycle bin.", False),
    ],
)
def test_only_http_runbooks_become_links(runbook: str, link: bool) -> None:
    html = page(ticket=ticket(runbook=runbook))
    assert ('rel="noopener noreferrer"' in html) is link
    assert 'href="javascript' not in html


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.953, "ratio", "95.3%"),
        (1536, "bytes", "1.5 KiB"),
        (512, "bytes", "512 B"),
        (90061, "seconds", "1d 1h 1m"),
        (None, "", "—"),
        (float("inf"), "", "inf"),
    ],
)
def test_numbers_read_as_people_expect(value: Any, unit: str, text: str) -> None:
    assert render.number(value, unit) == text


def test_times_are_utc_and_non_times_a_dash() -> None:
    assert render.when(1_700_000_000.0) == "2023-11-14T22:13:20Z"
    assert render.when(None) == render.when(float("nan")) == "—"
