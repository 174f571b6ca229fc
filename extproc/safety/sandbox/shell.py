"""Where shell commands write: redirection targets and the operands of writing programs.

Each command text is normalised (:func:`extproc.safety.commands.normalize.parse`:
``sudo``, ``bash -c``, ``env`` and the like already unwrapped) and its simple
commands are read in the order they run. What counts as written:

* output redirections: ``>``, ``>>``, ``2>``, ``&>``, ``>|``, ``<>``;
* ``rm``, ``rmdir``, ``unlink``, ``shred``, ``touch``, ``mkdir``, ``truncate``, ``tee``:
  every operand; ``chmod``/``chown``/``chgrp``: the files (not the mode or owner);
* ``mv``: sources and destination; ``cp``, ``install``, ``ln``, ``rsync``, ``scp``: the
  destination (``-t DIR`` too; remote ``host:path`` operands are not local);
* ``dd of=FILE``; ``sed -i``/``perl -i`` files; ``tar`` (extraction directory, or the
  archive it creates); ``unzip -d``; ``curl -o``/``-O``; ``wget -O``/``-P``;
  ``find`` roots when it ``-delete``\\s or ``-exec``\\s; ``apply_patch`` files;
* Windows: ``Remove-Item``, ``del``, ``rd``, ``New-Item``, ``Set-Content``, ``Out-File``,
  ``Copy-Item``, ``Move-Item``, ``copy``, ``move``, ``xcopy``, ``robocopy`` and aliases.

``cd``/``pushd`` change the directory later relative targets are resolved in.
Targets with a command substitution or a variable other than the home and working
directory ones (``$HOME``, ``${HOME}``, ``$PWD``, ``$env:USERPROFILE``,
``%USERPROFILE%``) are *unresolved*; brace expansions (``{a,b}``) are expanded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from extproc.safety.commands.braces import expand_braces
from extproc.safety.commands.normalize import parse
from extproc.safety.sandbox.patch import patch_paths
from extproc.safety.sandbox.resolve import is_absolute

__all__ = ["ShellWrites", "shell_writes"]

_OUT_OPS = frozenset({">", ">>", ">|", "&>", "&>>", "<>", ">&"})
_IN_OPS = frozenset({"<", "<<<", "<&"})
_SUBSTITUTIONS = ("$(", "`", "<(", ">(")
_ALLOWED_VARIABLES = ("$HOME", "${HOME}", "$PWD", "${PWD}", "$env:USERPROFILE", "$env:HOME")

_ALL_OPERANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "rm": ("", ()),
    "rmdir": ("", ()),
    "unlink": ("", ()),
    "shred": ("ns", ("--iterations", "--size", "--random-source")),
    "touch": ("dtr", ("--date", "--reference")),
    "mkdir": ("m", ("--mode", "--context")),
    "truncate": ("sr", ("--size", "--reference")),
    "tee": ("", ()),
}
_DESTINATION: dict[str, tuple[str, tuple[str, ...]]] = {
    "cp": ("tS", ("--target-directory", "--suffix")),
    "install": ("mogtS", ("--mode", "--owner", "--group", "--target-directory", "--suffix")),
    "ln": ("tS", ("--target-directory", "--suffix")),
    "rsync": (
        "efBTM",
        (
            "--rsh",
            "--filter",
            "--exclude",
            "--include",
            "--exclude-from",
            "--include-from",
            "--files-from",
            "--log-file",
            "--port",
            "--chmod",
            "--chown",
            "--temp-dir",
            "--partial-dir",
            "--backup-dir",
            "--compare-dest",
            "--link-dest",
            "--copy-dest",
            "--timeout",
            "--max-size",
            "--min-size",
            "--bwlimit",
            "--out-format",
            "--password-file",
            "--suffix",
            "--rsync-path",
        ),
    ),
    "scp": ("PioFclSJDX", ()),
}
_WINDOWS_DELETE_OR_CREATE = frozenset(
    {
        "remove-item",
        "ri",
        "del",
        "erase",
        "rd",
        "new-item",
        "ni",
        "md",
        "set-content",
        "add-content",
        "out-file",
        "clear-content",
        "clc",
    }
)
_WINDOWS_COPY = frozenset({"copy-item", "cpi", "copy", "xcopy", "robocopy"})
_WINDOWS_MOVE = frozenset({"move-item", "mi", "move"})
_PS_VALUED = frozenset(
    {
        "path",
        "literalpath",
        "destination",
        "filepath",
        "value",
        "itemtype",
        "type",
        "encoding",
        "name",
        "include",
        "exclude",
        "filter",
        "credential",
        "target",
        "newname",
        "inputobject",
        "width",
        "stream",
    }
)
_PS_TARGETS = frozenset({"path", "literalpath", "destination", "filepath"})
_CD = frozenset({"cd", "pushd", "chdir", "set-location", "sl"})


class ShellWrites:
    """The paths some shell commands write (as written, relative ones joined to the
    directory they run in) and the targets that could not be determined."""

    __slots__ = ("base", "paths", "unresolved")

    def __init__(self, workdir: str | None) -> None:
        self.paths: list[str] = []
        self.unresolved: list[str] = []
        #: Where relative paths resolve: "" the agent's directory, None unknown.
        self.base: str | None = workdir or ""

    # -- targets -----------------------------------------------------------------------

    def add(self, raw: str) -> None:
        if raw in ("", "-") or "{}" in raw:
            return
        if any(marker in raw for marker in _SUBSTITUTIONS):
            self.unresolved.append(raw)
            return
        expanded = expand_braces(raw)
        if expanded is None:
            self.unresolved.append(raw)
            return
        for path in expanded:
            located = self.place(path)
            if located is None:
                self.unresolved.append(path)
            else:
                self.paths.append(located)

    def place(self, path: str) -> str | None:
        """``path`` joined to the current directory; None when it cannot be told."""
        if _has_variable(path) or (path.startswith("~") and not _home_tilde(path)):
            return None
        if is_absolute(path) or self.base == "":
            return path
        if self.base is None:
            return None
        return self.base.rstrip("/\\") + "/" + path

    def change_directory(self, operands: Sequence[str]) -> None:
        if not operands:
            self.base = "~"
            return
        target = operands[0]
        if target == "-" or any(marker in target for marker in _SUBSTITUTIONS):
            self.base = None
            return
        self.base = self.place(target)

    # -- commands ----------------------------------------------------------------------

    def command(self, argv: Sequence[str]) -> None:
        words, redirects = _split(argv)
        for op, target in redirects:
            if op in _OUT_OPS and target is not None:
                self.add(target)
        if not words:
            return
        program = words[0].lower()
        if program in _ALL_OPERANDS:
            short, long = _ALL_OPERANDS[program]
            operands, _ = _scan(words, short, long)
            if program in ("rmdir", "mkdir"):
                operands = [o for o in operands if not _cmd_switch(o)]
            for operand in operands:
                self.add(operand)
        elif program in ("chmod", "chown", "chgrp"):
            operands, values = _scan(words, "", ("--from", "--reference"))
            if (
                "--reference" not in values
                and operands
                and (program != "chmod" or _is_mode(operands[0]))
            ):
                operands = operands[1:]
            for operand in operands:
                self.add(operand)
        elif program == "mv":
            operands, values = _scan(words, "tS", ("--target-directory", "--suffix"))
            for operand in [*operands, *_values(values, "-t", "--target-directory")]:
                self.add(operand)
        elif program in _DESTINATION:
            self.destination(program, words)
        elif program in _CD:
            operands, _ = _scan(words, "", ())
            self.change_directory([o for o in operands if not _cmd_switch(o)])
        elif program == "popd":
            self.base = None
        elif program in ("sed", "perl"):
            self.in_place(program, words)
        else:
            self.other(program, words, redirects)

    def destination(self, program: str, words: Sequence[str]) -> None:
        short, long = _DESTINATION[program]
        operands, values = _scan(words, short, long)
        directory = _values(values, "-t", "--target-directory")
        if directory:
            targets = directory
        elif program == "install" and ("-d" in values or "--directory" in values):
            targets = operands
        elif program == "ln" and len(operands) == 1:
            targets = ["."]
        else:
            targets = operands[-1:] if len(operands) >= 2 else []
        for target in targets:
            if program in ("rsync", "scp") and _remote(target):
                continue
            self.add(target)

    def in_place(self, program: str, words: Sequence[str]) -> None:
        if program == "sed":
            operands, values = _scan(words, "efl", ("--expression", "--file", "--line-length"))
            edits = any(key == "-i" or key.startswith("--in-place") for key in values)
            scripted = any(key in values for key in ("-e", "-f", "--expression", "--file"))
        else:
            operands, values = _scan(words, "eEIlmMx", ())
            edits = "-i" in values
            scripted = "-e" in values or "-E" in values
        if not edits:
            return
        files = [operand for operand in operands if operand]
        for operand in files if scripted else files[1:]:
            self.add(operand)

    def other(
        self, program: str, words: Sequence[str], redirects: Sequence[tuple[str, str | None]]
    ) -> None:
        if program == "dd":
            for word in words[1:]:
                if word.startswith("of="):
                    self.add(word[3:])
        elif program == "tar":
            self.tar(words)
        elif program == "unzip":
            _, values = _scan(words, "dxP", ())
            self.add(values.get("-d") or ".")
        elif program == "curl":
            self.curl(words)
        elif program == "wget":
            _, values = _scan(words, "OoPaetTwQUBiDlA", ("--output-document", "--directory-prefix"))
            document = _values(values, "-O", "--output-document")
            prefix = _values(values, "-P", "--directory-prefix")
            for target in document or prefix or ["."]:
                self.add(target)
        elif program == "find":
            self.find(words)
        elif program in ("apply_patch", "applypatch"):
            patch: str | None = words[1] if len(words) > 1 else None
            for op, here in redirects:
                if op.endswith("<<<") and here:
                    patch = here
            for path in patch_paths(patch or ""):
                self.add(path)
        else:
            self.windows(program, words)

    def tar(self, words: Sequence[str]) -> None:
        tokens = list(words[1:])
        if tokens and not tokens[0].startswith("-"):
            tokens[0] = "-" + tokens[0]  # old style: tar xzf archive.tgz
        _, values = _scan(["tar", *tokens], "fCbLTXgHKNVI", ("--file", "--directory"))
        extract = any(key in values for key in ("-x", "--extract", "--get"))
        create = any(key in values for key in ("-c", "-r", "-u", "-A", "--create", "--append"))
        if extract:
            for target in _values(values, "-C", "--directory") or ["."]:
                self.add(target)
        elif create:
            for target in _values(values, "-f", "--file"):
                self.add(target)

    def curl(self, words: Sequence[str]) -> None:
        _, values = _scan(words, "oudHXAeEwTxrYyzKbcCmD", ("--output", "--output-dir"))
        for target in _values(values, "-o", "--output"):
            self.add(target)
        if "-O" in values or "--remote-name" in values or "--remote-name-all" in values:
            self.add(_values(values, "--output-dir")[0] if "--output-dir" in values else ".")

    def find(self, words: Sequence[str]) -> None:
        actions = ("-delete", "-exec", "-execdir", "-ok", "-okdir")
        if not any(word in actions for word in words[1:]):
            return
        roots: list[str] = []
        for word in words[1:]:
            if word in ("-H", "-L", "-P"):
                continue
            if word.startswith(("-", "(", "!")):
                break
            roots.append(word)
        for root in roots or ["."]:
            self.add(root)

    def windows(self, program: str, words: Sequence[str]) -> None:
        if not (
            program in _WINDOWS_DELETE_OR_CREATE
            or program in _WINDOWS_COPY
            or program in _WINDOWS_MOVE
        ):
            return
        operands: list[str] = []
        named: list[str] = []
        destination: list[str] = []
        index = 1
        while index < len(words):
            word = words[index]
            name = word[1:].lower()
            if word.startswith("-") and len(word) > 1:
                if name in _PS_VALUED and index + 1 < len(words):
                    index += 1
                    if name == "destination":
                        destination.append(words[index])
                    elif name in _PS_TARGETS:
                        named.append(words[index])
            elif not _cmd_switch(word):
                operands.append(word)
            index += 1
        if program in _WINDOWS_COPY:
            if program == "robocopy":
                targets = operands[1:2]
            else:
                targets = destination or (operands[-1:] if len(operands) >= 2 else [])
        elif program in _WINDOWS_MOVE:
            targets = [*named, *operands, *destination]
        else:
            targets = [*named, *operands]
        for target in targets:
            self.add(target)


def shell_writes(commands: Iterable[str], workdir: str | None = None) -> ShellWrites:
    """What the command texts write, run one after the other from ``workdir``."""
    writes = ShellWrites(workdir)
    for text in commands:
        for command in parse(text).sequence:
            writes.command(command.argv)
            if "xargs" in command.wrappers and _takes_paths(command.argv):
                # xargs appends arguments from its input: more targets than the text shows.
                writes.unresolved.append(f"{command.text} (arguments from xargs)")
    return writes


# -- helpers -----------------------------------------------------------------------------

_PATH_WRITERS = frozenset(
    {
        *_ALL_OPERANDS,
        *_DESTINATION,
        *_WINDOWS_DELETE_OR_CREATE,
        *_WINDOWS_COPY,
        *_WINDOWS_MOVE,
        "chmod",
        "chown",
        "chgrp",
        "mv",
        "sed",
        "perl",
        "dd",
        "tar",
        "unzip",
    }
)


def _takes_paths(argv: Sequence[str]) -> bool:
    """A program that writes the paths it is given."""
    return bool(argv) and argv[0].lower() in _PATH_WRITERS


def _split(argv: Sequence[str]) -> tuple[list[str], list[tuple[str, str | None]]]:
    """argv -> words and (operator, target) redirections (the normaliser puts them last)."""
    words: list[str] = []
    redirects: list[tuple[str, str | None]] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        op = token.lstrip("0123456789")
        if op[:2] in (">&", "<&") and len(op) > 2:
            redirects.append((op, None))  # 2>&1: a descriptor copy
        elif op in _OUT_OPS or op in _IN_OPS:
            target = argv[index + 1] if index + 1 < len(argv) else None
            redirects.append((op, target))
            index += 1
        else:
            words.append(token)
        index += 1
    return words, redirects


def _scan(
    words: Sequence[str], short_args: str, long_args: Iterable[str]
) -> tuple[list[str], dict[str, str]]:
    """Operands and options (``{"-t": "dir", "-f": ""}``) of a command's words."""
    long = frozenset(long_args)
    operands: list[str] = []
    values: dict[str, str] = {}
    index, options = 1, True
    while index < len(words):
        word = words[index]
        if not options or word == "-" or not word.startswith("-"):
            operands.append(word)
        elif word == "--":
            options = False
        elif word.startswith("--"):
            name, equals, value = word.partition("=")
            if not equals and name in long and index + 1 < len(words):
                index += 1
                value = words[index]
            values[name] = value
        else:
            for position in range(1, len(word)):
                letter = "-" + word[position]
                if word[position] in short_args:
                    value = word[position + 1 :]
                    if not value and index + 1 < len(words):
                        index += 1
                        value = words[index]
                    values[letter] = value
                    break
                values.setdefault(letter, "")
        index += 1
    return operands, values


def _values(values: dict[str, str], *names: str) -> list[str]:
    return [values[name] for name in names if values.get(name)]


def _is_mode(text: str) -> bool:
    if text.isdigit():
        return True
    return bool(text) and all(char in "ugoa+-=rwxXst," for char in text)


def _cmd_switch(text: str) -> bool:
    """A cmd.exe switch (``/s``, ``/q``, ``/e:on``), not a path."""
    return (
        len(text) >= 2
        and text[0] == "/"
        and text[1].isalpha()
        and (len(text) == 2 or text[2] == ":")
    )


def _remote(text: str) -> bool:
    """``host:path`` or ``user@host:path`` (rsync, scp), not ``C:\\x`` or ``./a:b``."""
    head, colon, _ = text.partition(":")
    return bool(colon) and len(head) > 1 and "/" not in head and "\\" not in head


def _home_tilde(path: str) -> bool:
    return path == "~" or path.startswith(("~/", "~\\"))


def _has_variable(path: str) -> bool:
    """A variable other than the home/working directory ones at the start."""
    rest = path
    for prefix in _ALLOWED_VARIABLES:
        if path == prefix or path.startswith((prefix + "/", prefix + "\\")):
            rest = path[len(prefix) :]
            break
    if "$" in rest:
        return True
    if path.upper().startswith("%USERPROFILE%"):
        rest = rest[len("%USERPROFILE%") :]
    return rest.count("%") >= 2
