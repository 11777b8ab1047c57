"""jobs.d/*.toml read in memory: tables by kind with their lines, names unique across files,
and faults naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from middlewared import jobsd
from middlewared.configfile import ConfigError
from middlewared.declarations import Declarations


def load(folder: Path, **files: str) -> Declarations:
    for name, text in files.items():
        (folder / f"{name}.toml").write_text(text)
    found = Declarations()
    for path in jobsd.files(folder):
        jobsd.load(path, found)
    return found


def refused(folder: Path, **files: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(folder, **files)
    return str(e.value).removeprefix(f"{folder}/")


def test_tables_with_their_lines(tmp_path: Path) -> None:
    found = load(
        tmp_path,
        a='# c\n[[command]]\nname = "x"\ncommands = ["true"]\n\n[[trigger]]\nname = "t"\n'
        'owner = "alice"\ntype = "@client"\nmethod = "command.run"\n',
        b='[[notifier]]\nname = "n"\nkind = "mail"\nto = ["a@b.c"]\n',
    )
    summary = [(i.kind, i.name, i.path.name, i.line, i.owner) for i in found.items]
    assert summary == [
        ("command", "x", "a.toml", 2, "root"),
        ("trigger", "t", "a.toml", 6, "alice"),
        ("notifier", "n", "b.toml", 1, "root"),
    ]
    # A trigger's data is what trigger.create takes: no name, no owner.
    assert found.items[1].data == {"type": "@client", "method": "command.run"}
    assert jobsd.files(tmp_path / "none") == []


def test_faults(tmp_path: Path) -> None:
    assert refused(tmp_path, a="[[job]]\nname = 1\n") == (
        "a.toml:1: unknown table 'job': use [[notifier]], [[command]], [[trigger]], [[worker]]"
    )
    (tmp_path / "a.toml").unlink()
    assert refused(tmp_path, b='\n[[command]]\ncommands = ["x"]\n') == (
        "b.toml:2: a [[command]] needs a name"
    )
    (tmp_path / "b.toml").unlink()
    reason = refused(tmp_path, c="[[command]\n")
    assert reason.startswith("c.toml:1: ")
    (tmp_path / "c.toml").unlink()
    twice = '[[command]]\nname = "x"\ncommands = ["a"]\n'
    assert refused(tmp_path, d=twice, e="\n" + twice) == (
        f"e.toml:2: command 'x' is declared twice (also at {tmp_path}/d.toml:1)"
    )
