"""File sandbox: write targets of tool calls, path resolution, the policy, a corpus.

``corpus/sandbox.jsonl``: one tool call a line, ``{"expect": "allow"|"block", "tool",
"args"}`` with optional ``roots`` (default ``["/srv/proj"]``), ``home`` (default
``/home/dev``; ``null``: not configured) and ``strict``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.safety.sandbox import Sandbox, WriteTargets, locate, paths_written
from extproc.safety.sandbox.patch import patch_paths
from extproc.safety.sandbox.shell import shell_writes

CORPUS = Path(__file__).parent / "corpus" / "sandbox.jsonl"
SANDBOX = Sandbox(["/srv/proj"], home="/home/dev")


def _corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line]


def test_corpus() -> None:
    rows = _corpus()
    assert len(rows) >= 100
    wrong = []
    for row in rows:
        sandbox = Sandbox(
            row.get("roots", ["/srv/proj"]),
            home=row.get("home", "/home/dev"),
            strict=row.get("strict", False),
        )
        violation = sandbox.check(row["tool"], row["args"])
        if ("block" if violation else "allow") != row["expect"]:
            wrong.append((row, violation))
    blocked = sum(row["expect"] == "block" for row in rows)
    print(f"\nsandbox corpus: {len(rows)} calls ({blocked} to block), {len(wrong)} wrong")
    assert not wrong, wrong


# -- what is written -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "paths"),
    [
        ("Write", {"file_path": "a.txt", "content": ""}, ("a.txt",)),
        ("NotebookEdit", {"notebook_path": "n.ipynb"}, ("n.ipynb",)),
        ("apply_patch", {"command": "*** Begin Patch\n*** Add File: p\n rm /x\n"}, ("p",)),
        ("write_file", {"path": "b"}, ("b",)),
        ("mcp__fs__edit_file", {"path": "c", "edits": []}, ("c",)),
        ("rename_file", {"source": "a", "destination": "b"}, ("b", "a")),
        ("Bash", {"command": "echo x > a 2>> b &> c"}, ("a", "b", "c")),
        ("Bash", {"command": "cp -t dest a b"}, ("dest",)),
        ("Bash", {"command": "mv a b c/"}, ("a", "b", "c/")),
        ("Bash", {"command": "chown -R me:me x y"}, ("x", "y")),
        ("Bash", {"command": "chmod -x run.sh"}, ("run.sh",)),
        ("Bash", {"command": "sed -e s/a/b/ -i f1 f2"}, ("f1", "f2")),
        ("Bash", {"command": "sed -i '' s/a/b/ f"}, ("f",)),
        ("Bash", {"command": "perl -pi -e 's/a/b/' f"}, ("f",)),
        ("Bash", {"command": "sed s/a/b/ f"}, ()),
        ("Bash", {"command": "tar xzf a.tgz"}, (".",)),
        ("Bash", {"command": "tar -cf out.tar src"}, ("out.tar",)),
        ("Bash", {"command": "curl -sSLo out https://x"}, ("out",)),
        ("Bash", {"command": "wget -qO- https://x"}, ()),
        ("Bash", {"command": "find src -type f -exec rm {} +"}, ("src",)),
        ("Bash", {"command": "find src -name x"}, ()),
        ("Bash", {"command": "touch a{1,2}{x,y}"}, ("a1x", "a1y", "a2x", "a2y")),
        ("Bash", {"command": "cd sub; pushd deeper; rm x; popd; rm y"}, ("sub/deeper/x",)),
        ("Bash", {"command": "ls; cat a"}, ()),
        ("Bash", {"command": "rsync -av src/ host:/x/"}, ()),
    ],
)
def test_paths_written(tool: str, arguments: dict[str, Any], paths: tuple[str, ...]) -> None:
    assert paths_written(tool, arguments).paths == paths


def test_unresolved_targets() -> None:
    targets = paths_written("Bash", {"command": "rm $OUT/x; echo > `mktemp`; rm ~bob/x"})
    assert targets.unparsed
    assert targets.unresolved == ("$OUT/x", "`mktemp`", "~bob/x")
    assert paths_written("Bash", {"command": "cd $X; rm y"}).unresolved == ("y",)
    assert paths_written("Write", {"content": "x"}) == WriteTargets((), True, ())
    assert not paths_written("Bash", {"command": "rm $HOME/x ${HOME}/y $PWD/z"}).unparsed
    xargs = paths_written("Bash", {"command": "find / -name x | xargs rm -f"})
    assert xargs.unresolved == ("rm -f (arguments from xargs)",)


def test_patch_paths() -> None:
    patch = (
        "*** Begin Patch\n*** Add File: a.py\n+x\n*** Update File: b.py\n*** Move to: c.py\n"
        "@@\n-a\n+b\n*** Delete File: d.py\n*** End Patch\n"
    )
    assert patch_paths(patch) == ["a.py", "b.py", "c.py", "d.py"]
    assert patch_paths("no patch here") == []


def test_workdir_argument() -> None:
    writes = shell_writes(["rm x"], "/etc")
    assert writes.paths == ["/etc/x"]


# -- resolution ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/b", "/srv/proj/a/b"),
        ("./a/../b", "/srv/proj/b"),
        ("//etc///hosts", "/etc/hosts"),
        ("/srv/proj/../../..", "/"),
        ("~/.ssh", "/home/dev/.ssh"),
        ("$HOME/x", "/home/dev/x"),
        ("${HOME}", "/home/dev"),
        ("$PWD/x", "/srv/proj/x"),
        ("C:\\Users\\X\\a.txt", "C:/Users/X/a.txt"),
        ("c:/a/../b", "C:/b"),
    ],
)
def test_locate(path: str, expected: str) -> None:
    location = locate(path, cwd="/srv/proj", home="/home/dev")
    assert location is not None
    assert location.path == expected


def test_locate_without_home() -> None:
    assert locate("~/x", cwd="/w", home=None) is None


def test_windows_containment_ignores_case() -> None:
    root = locate("C:\\Users\\Dev\\Proj", cwd="/", home=None)
    inside = locate("c:/users/dev/proj/x", cwd="/", home=None)
    sibling = locate("C:\\Users\\Dev\\Project2", cwd="/", home=None)
    assert root is not None and inside is not None and sibling is not None
    assert inside.within(root)
    assert not sibling.within(root)


# -- the policy ------------------------------------------------------------------------


def test_violation_names_resolved_path() -> None:
    violation = SANDBOX.check("Edit", {"file_path": "../x/../../etc/hosts"})
    assert violation is not None
    assert violation.path == "/etc/hosts"
    assert "outside the allowed directories (/srv/proj)" in violation.reason


def test_several_roots_and_cwd() -> None:
    sandbox = Sandbox(["/srv/a", "/srv/b"], cwd="/srv/b")
    assert sandbox.check("Write", {"file_path": "x"}) is None
    assert sandbox.check("Write", {"file_path": "../a/x"}) is None
    assert sandbox.check("Write", {"file_path": "../c/x"}) is not None


def test_root_slash_allows_everything() -> None:
    assert Sandbox(["/"]).check("Write", {"file_path": "/etc/hosts"}) is None


def test_special_targets() -> None:
    for target in ("/dev/null", "/dev/stdout", "/dev/stderr"):
        assert SANDBOX.check("Bash", {"command": f"echo x > {target}"}) is None
    assert SANDBOX.check("Bash", {"command": "echo x > /dev/sda"}) is not None


def test_strict_reports_what_is_unknown() -> None:
    strict = Sandbox(["/srv/proj"], strict=True)
    violation = strict.check("Bash", {"command": "cp a $DEST"})
    assert violation is not None
    assert violation.path == "$DEST"
    assert "cannot determine" in violation.reason


def test_relative_root_is_rejected() -> None:
    with pytest.raises(ValueError, match="absolute"):
        Sandbox(["proj"])
    with pytest.raises(ValueError):
        Sandbox([])


@pytest.mark.parametrize(
    "command",
    ["{" * 60000, "{a,b}" * 12000, ">x " * 20000, "cd a; " * 10000, "rm " + "a " * 30000],
)
def test_hostile_commands_are_quick(command: str) -> None:
    started = time.perf_counter()
    SANDBOX.check("Bash", {"command": command})
    assert time.perf_counter() - started < 3.0


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(max_size=300), st.sampled_from(["Bash", "Write", "apply_patch", "shell"]))
def test_any_text_is_answered(text: str, tool: str) -> None:
    arguments: dict[str, Any] = {"command": text, "file_path": text, "input": text}
    result = Sandbox(["/srv/proj"], home="/home/dev", strict=True).check(tool, arguments)
    assert result is None or result.reason
