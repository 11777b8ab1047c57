"""karajo's INI dialect and its mapping, in memory: repeated keys kept in order, comments,
quotes, escapes, continuations, and every refusal naming the file and line (never a
secret's value)."""

from __future__ import annotations

from pathlib import Path

import pytest

from middlewared.configfile import ConfigError
from middlewared.declarations import Declarations
from middlewared.karajo import ini, mapping

PATH = Path("karajo.ini")


def parse(text: str) -> ini.IniFile:
    return ini.parse(text, PATH)


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse(text)
    return str(e.value)


def test_sections_keys_and_repeated_keys_in_order() -> None:
    file = parse(
        "# a comment\n"
        "; another\n"
        "[Karajo]\n"
        "Name = my karajo  # trailing comment\n"
        '[job "Build It"]\n'
        "command = make\n"
        "command = make install ; a comment\n"
        "http_insecure\n"
    )
    karajo, job = file.sections
    assert (karajo.name, karajo.sub, karajo.line) == ("karajo", None, 3)
    assert karajo.entries == [ini.Entry("name", "my karajo", 4)]
    assert (job.name, job.sub, job.title) == ("job", "Build It", '[job "Build It"]')
    assert [(e.key, e.value, e.line) for e in job.entries] == [
        ("command", "make", 6),
        ("command", "make install", 7),
        ("http_insecure", "true", 8),
    ]


def test_quotes_escapes_and_continuations() -> None:
    (section,) = parse(
        '[job "x"]\n'
        'a = "  kept  " outside\n'
        'b = "has # and ; inside"\n'
        'c = say \\"hi\\" \\\\ done\n'
        "d = first \\\n"
        "  second\n"
        'e = ""\n'
        "f = tab\\there\n"
    ).sections
    values = {e.key: (e.value, e.line) for e in section.entries}
    assert values["a"] == ("  kept   outside", 2)
    assert values["b"] == ("has # and ; inside", 3)
    assert values["c"] == ('say "hi" \\ done', 4)
    assert values["d"] == ("first   second", 5)
    assert values["e"] == ("", 7)
    assert values["f"] == ("tab\there", 8)


def test_faults_name_the_line() -> None:
    assert refused("key = 1\n") == "karajo.ini:1: a key before any [section]"
    assert refused("[job\n").startswith("karajo.ini:1: not a section header")
    assert refused('[job "x"]\n= 1\n').startswith("karajo.ini:2: not a key")
    assert refused('[job "x"]\nsecret = "open\n') == "karajo.ini:2: secret: a quote is not closed"
    assert refused('[job "x"]\na = \\q\n').startswith("karajo.ini:2: a: a backslash")
    text = '[job "x"]\ncommand = a\n\n[job "x"]\n'
    assert refused(text) == 'karajo.ini:4: [job "x"] is written twice (first at line 1)'


def test_a_byte_order_mark_and_crlf_line_ends(tmp_path: Path) -> None:
    path = tmp_path / "k.ini"
    path.write_bytes(b'\xef\xbb\xbf[job "x"]\r\ncommand = a\r\n')
    (section,) = ini.read(path).sections
    assert (section.title, section.entries) == ('[job "x"]', [ini.Entry("command", "a", 2)])


def test_booleans() -> None:
    assert ini.boolean(ini.Entry("k", "Yes", 1), PATH) is True
    assert ini.boolean(ini.Entry("k", "false", 1), PATH) is False
    with pytest.raises(ConfigError, match=r"karajo.ini:1: k: not a boolean"):
        ini.boolean(ini.Entry("k", "maybe", 1), PATH)


def load(tmp_path: Path, text: str) -> Declarations:
    path = tmp_path / "karajo.ini"
    path.write_text(text)
    found = Declarations()
    mapping.load(path, found)
    return found


def load_refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    return str(e.value).removeprefix(f"{tmp_path / 'karajo.ini'}:")


def test_a_job_maps_to_a_command_and_its_triggers(tmp_path: Path) -> None:
    found = load(
        tmp_path,
        "[karajo]\nsecret = the-global-secret-value\nmax_job_running = 3\n"
        '[notif "n"]\nkind = email\nsmtp_server = smtp://h:2525\nfrom = a@b.c\nto = x@y.z\n'
        '[job "j"]\nschedule = weekly@Mon@09:00\ninterval = 1m\npath = /a/b\n'
        "header_sign = X-Sig\ncommand = one\ncommand = two\nnotif_on_failed = n\n",
    )
    assert found.max_running == 3
    by = {(i.kind, i.name): i for i in found.items}
    command = by["command", "j"]
    assert command.data == {"name": "j", "commands": ["one", "two"], "notify_on_failure": ["n"]}
    timer = by["trigger", "karajo/job/j/timer"]
    # schedule wins over interval, as in karajo; the trigger points at the key's line.
    assert (timer.data["type"], timer.data["arguments"], timer.line) == (
        "@schedule",
        "weekly@Mon@09:00",
        10,
    )
    hook = by["trigger", "karajo/job/j/hook"]
    assert hook.data["auth"] == {
        "kind": "hmac-sha256",
        "path": "a/b",
        "secret": "the-global-secret-value",
        "header": "X-Sig",
    }
    assert hook.data["params"] == ["j", {}] and hook.data["pass_event"] is True
    notifier = by["notifier", "n"]
    assert notifier.data["smtp"] == {"server": "smtp://h:2525", "from": "a@b.c"}


def test_an_http_job_maps_to_a_trigger_of_http_request(tmp_path: Path) -> None:
    found = load(
        tmp_path,
        '[job.http "p"]\nhttp_url = https://example.com/x\nhttp_timeout = -1s\n'
        "http_header = A: 1\nhttp_header = B: 2\nhttp_insecure = yes\n",
    )
    (item,) = found.items
    assert item.name == "karajo/job.http/p" and item.data["type"] == "@client"
    assert item.data["params"] == [
        {
            "method": "GET",
            "url": "https://example.com/x",
            "request_type": "query",
            "headers": ["A: 1", "B: 2"],
            "timeout": 3600.0,
            "insecure": True,
        }
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[job "j"]\ncommand = a\nbogus = 1\n', '3: unknown key "bogus" in [job "j"]'),
        ("[karajo]\nuser = x\n", '2: unknown key "user" in [karajo]'),
        ('[job "j"]\n', '1: [job "j"]: a job needs at least one command'),
        ('[job "j"]\ncommand = a\ninterval = 59s\n', "3: [job \"j\"]: interval: '59s'"),
        ('[job "j"]\ncommand = a\nschedule = daily@25:00\n', "3: [job \"j\"]: schedule: '25:00'"),
        ('[job "j"]\ncommand = a\npath = /p\n', '3: [job "j"]: path: a signed webhook needs'),
        ('[job "j"]\ncommand = a\npath = /p\nauth_kind = hmac\n', '4: [job "j"]: auth_kind:'),
        ('[job "j"]\ncommand = a\nlog_retention = 0\n', '3: [job "j"]: log_retention:'),
        ('[job "j"]\ndescription = a\ndescription = b\ncommand = a\n', "3: description is"),
        ('[job.http "h"]\nschedule = minutely\n', '1: [job.http "h"]: http_url is required'),
        ('[job.http "h"]\nhttp_url = http://x/\nhttp_method = PATCH\n', "3: [job.http"),
        ('[notif "n"]\nkind = slack\n', '2: [notif "n"]: kind:'),
        ('[notif "n"]\nkind = email\nsmtp_server = smtps://h\n', '1: [notif "n"]: from:'),
        ("[job]\ncommand = a\n", '1: [job]: write it [job "name"]'),
        ('[karajo "x"]\n', '1: [karajo "x"]: write it [karajo]'),
        ('[user "x"]\n', '1: unknown section [user "x"]'),
    ],
)
def test_refusals_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    assert load_refused(tmp_path, text).startswith(expected)


def test_secrets_are_never_in_errors(tmp_path: Path) -> None:
    reason = load_refused(tmp_path, '[job "j"]\nsecret = "a-secret-value\n')
    assert "a-secret-value" not in reason
    reason = load_refused(tmp_path, '[notif "n"]\nkind = email\nsmtp_password = hunter2-x\n')
    assert "hunter2-x" not in reason
