"""Command-line redaction: a table of (argv, what must be gone, what must stay)."""

from __future__ import annotations

import re
import time

import pytest

from tripline.agent.redact import Redaction, compile_patterns, redact_argv, secret_name

TOKEN = "tle_acme_Vq3xPz8LmN2rT5wY7bD4"
CREDENTIAL = "agt_1234.Zk9Qw3Er5Ty7Ui9Op1As3Df5Gh7"

CASES = [
    # (argv, expected redacted line)
    (["app", "--password", "hunter2"], "app --password ***"),
    (["app", "--password=hunter2"], "app --password=***"),
    (["app", "-password", "hunter2", "-v"], "app -password *** -v"),
    (["app", "--db-password", "a b c", "--verbose"], "app --db-password *** --verbose"),
    (["app", "--enrollment-token", "tle_x_abc"], "app --enrollment-token ***"),
    (["app", "--token=abc", "--api-key", "k1", "--secret", "s1"], None),
    (["app", "--apikey", "k1", "--auth", "a1", "--client-credential", "c1"], None),
    (["app", "--passwd", "p1", "--pwd", "p2", "--passphrase", "p3", "--pass", "p4"], None),
    (["env", "PASSWORD=x1", "db_password=x2", "AWS_SECRET_ACCESS_KEY=x3"], None),
    (["app", "HOME=/root", "LANG=C"], "app HOME=/root LANG=C"),
    (
        ["tripline", "collector", "--customer", "acme=TOKEN1"],
        "tripline collector --customer acme=***",
    ),
    (["tripline", "collector", "--customer=acme=TOKEN1"], "tripline collector --customer=acme=***"),
    (["git", "clone", "https://bob:s3cr3t@git.example.com/r.git"], None),
    (["curl", "ftp://u:p@ss@host/file"], "curl ftp://u:***@host/file"),
    (["curl", "https://example.com:8443/path?x=1"], "curl https://example.com:8443/path?x=1"),
    (
        ["curl", "https://h/cb?code=1&access_token=tok1&x=2"],
        "curl https://h/cb?code=1&access_token=***&x=2",
    ),
    (["curl", "-H", "Authorization: Bearer abc.def"], None),
    (["curl", "-H", "X-Api-Key: k123"], "curl -H X-Api-Key: ***"),
    (["net", "use", "\\\\srv\\share", "/user:bob", "/password:pw1"], None),
    (["runas", "/savecred", "/password=pw1"], None),
    (["java", "-Djavax.net.ssl.keyStorePassword=pw1", "-jar", "a.jar"], None),
    (["sh", "-c", "mysql --password hunter2 -e 'select 1'"], None),
    (
        ["postgres: app password=pw1 10.0.0.1(5432) idle"],
        "postgres: app password=*** 10.0.0.1(5432) idle",
    ),
    (["mysql", "-uroot", "-phunter2", "db"], "mysql -uroot -p*** db"),
    (["mysqldump.exe", "--password=hunter2"], "mysqldump.exe --password=***"),
    (["sshpass", "-p", "hunter2", "ssh", "host"], "sshpass -p *** ssh host"),
    (["ssh", "-p", "2222", "host"], "ssh -p 2222 host"),  # a port, not a password
    (["redis-cli", "-h", "r1", "-a", "hunter2"], "redis-cli -h r1 -a ***"),
    (["curl", "-u", "bob:hunter2", "https://h/"], "curl -u bob:*** https://h/"),
    (["curl", "-u", "bob", "https://h/"], "curl -u bob https://h/"),  # curl asks for it
    (["ls", "-a", "-u", "x:y"], "ls -a -u x:y"),  # other programs' -a and -u
    (["docker", "run", "-p", "8080:80", "-e", "API_TOKEN=t1", "img"], None),
    (["chrome.exe", "--type=renderer", "--lang=de"], "chrome.exe --type=renderer --lang=de"),
    (["python", "-c", "import time; time.sleep(60)"], "python -c import time; time.sleep(60)"),
    (["app", "--password"], "app --password"),  # nothing follows: nothing to hide
    (["app", "--auth-token", "--verbose"], "app --auth-token --verbose"),
]
SECRET_VALUES = ("hunter2", "x1", "x2", "x3", "tok1", "abc.def", "k1", "s1", "a1", "c1", "pw1")


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_redaction_table(argv: list[str], expected: str | None) -> None:
    line = redact_argv(argv)
    if expected is not None:
        assert line == expected
    words = set(re.split(r"[\s=:@&?/'\"]+", line))
    for secret in (*SECRET_VALUES, "TOKEN1", "s3cr3t", "p2", "p3", "p4", "t1", "pw1"):
        assert secret not in words, (secret, line)


def test_rewritten_title_keeps_its_readable_words() -> None:
    line = redact_argv(["postgres: app_user secret_db 10.0.0.1(5432) idle"])
    assert line.startswith("postgres: app_user")  # "secret_db" is a name, but not a flag


def test_url_keeps_user_and_host() -> None:
    line = redact_argv(["git", "clone", "https://bob:s3cr3t@git.example.com/r.git"])
    assert line == "git clone https://bob:***@git.example.com/r.git"


def test_known_secrets_are_redacted_wherever_they_appear() -> None:
    argv = ["app", TOKEN, f"--opaque={CREDENTIAL}x", f"prefix{TOKEN}", "tail"]
    line = redact_argv(argv, secrets=(TOKEN, CREDENTIAL))
    assert TOKEN not in line and CREDENTIAL not in line
    assert line == "app *** --opaque=***x prefix*** tail"


def test_short_known_secrets_are_ignored() -> None:
    assert redact_argv(["app", "abc"], secrets=("abc",)) == "app abc"


def test_extra_patterns_from_the_config() -> None:
    patterns = compile_patterns([r"ACME-[0-9]{4}-[0-9]{4}", r"(?i)licen[cs]e\S*"])
    line = redact_argv(["app", "ACME-1234-5678", "--x", "License=foo"], patterns=patterns)
    assert line == "app *** --x ***"


def test_redaction_object_collects_secrets() -> None:
    redaction = Redaction().with_secrets(TOKEN, None, "").with_secrets(CREDENTIAL, TOKEN)
    assert redaction.secrets == (TOKEN, CREDENTIAL)
    assert redaction(["app", CREDENTIAL]) == "app ***"


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True),
        ("DB_PASSWORD", True),
        ("keyStorePassword", True),
        ("api-key", True),
        ("x-auth-token", True),
        ("pass", True),
        ("db-pw", True),
        ("customer", False),
        ("lang", False),
        ("type", False),
        ("port", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


@pytest.mark.parametrize(
    "argv",
    [
        ["app", "a" * 200_000],
        ["app", "key" * 70_000],
        ["app", "x:" * 100_000],
        ["app", "a://b:" + "x" * 200_000],
        ["app", "-" * 200_000],
        ["app", "Authorization" * 20_000],
    ],
)
def test_hostile_command_lines_are_scanned_in_linear_time(argv: list[str]) -> None:
    started = time.perf_counter()
    redact_argv(argv)
    # quadratic scans of 200k characters take minutes; linear ones milliseconds
    assert time.perf_counter() - started < 2.0
