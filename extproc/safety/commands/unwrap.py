"""Wrappers: programs that run another command, and how to find that command.

Each function here looks at a command's words (the first is the wrapper) and
says where the wrapped command starts, or what text a shell would run, without
executing or expanding anything. They only read their arguments; the loop that
applies them repeatedly, with a depth bound, is in
:mod:`extproc.safety.commands.normalize`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence

import re2

from extproc.safety.commands.lexer import Word
from extproc.safety.commands.quoting import quote

__all__ = [
    "C_OPTION_PROGRAMS",
    "SHELLS",
    "WINDOWS_PROGRAMS",
    "WRAPPERS",
    "c_option_body",
    "cmd_body",
    "env_split_body",
    "git_subcommand_start",
    "powershell_body",
    "program_name",
    "shell_body",
    "watch_body",
    "word_text",
]

#: Shells whose ``-c`` argument (or heredoc, when they read standard input) is a script.
SHELLS = frozenset(
    {"sh", "bash", "rbash", "zsh", "dash", "ksh", "mksh", "ash", "yash", "fish", "csh", "tcsh"}
)
#: Windows programs: their arguments keep backslashes (``C:\\Users``), names ignore case.
WINDOWS_PROGRAMS = frozenset(
    {
        "cmd",
        "powershell",
        "pwsh",
        "rd",
        "del",
        "erase",
        "format",
        "diskpart",
        "remove-item",
        "ri",
        "format-volume",
        "clear-disk",
        "initialize-disk",
        "remove-partition",
        "robocopy",
        "xcopy",
        "icacls",
        "takeown",
        "attrib",
        "reg",
        "bcdedit",
        "vssadmin",
        "wmic",
        "netsh",
        "taskkill",
        "new-item",
        "set-content",
        "add-content",
        "out-file",
        "clear-content",
        "copy-item",
        "move-item",
        "rename-item",
        "invoke-expression",
        "iex",
        "start-process",
        "cipher",
        "mklink",
        "stop-computer",
        "restart-computer",
    }
)

_WINDOWS_PATH = re2.compile(
    r"^(?:[A-Za-z]:\\|\\\\|%[A-Za-z_]+%\\|\$env:[A-Za-z_]+\\|~\\|\.\.?\\)"
    r"|\\[^\\]*\.(?:[Ee][Xx][Ee]|[Cc][Mm][Dd]|[Bb][Aa][Tt]|[Pp][Ss]1)$"
)
_SUBSTITUTIONS = ("$(", "`", "<(", ">(")
_MARKERS = frozenset("$`<>")


def word_text(word: Word, windows: bool) -> str:
    """The word as the program receives it: its Windows value for Windows programs and
    for words that look like Windows paths (``C:\\x``, ``%USERPROFILE%\\x``), else POSIX."""
    if word.wvalue != word.value and (windows or _WINDOWS_PATH.search(word.wvalue)):
        return word.wvalue
    return word.value


def program_name(word: Word) -> str:
    """The program a word runs: ``/usr/bin/git`` -> ``git``, ``C:\\...\\cmd.exe`` -> ``cmd``.

    A word holding a substitution (``$(which rm)``) is kept whole.
    """
    text = word_text(word, False)
    if not _MARKERS.isdisjoint(text) and any(marker in text for marker in _SUBSTITUTIONS):
        return text
    if "/" not in text and "\\" not in text and text[-4:].lower() != ".exe":
        return text  # already a bare name
    name = _base_name(text)
    while True:  # until nothing changes: the name of a name is itself
        shorter = _base_name(name)
        if shorter == name:
            return name
        name = shorter


def _base_name(text: str) -> str:
    if "\\" in text and _WINDOWS_PATH.search(text):
        cut = max(text.rfind("/"), text.rfind("\\"))
    else:
        cut = text.rfind("/")
    name = text[cut + 1 :] if cut >= 0 else text
    while len(name) > 4 and name[-4:].lower() == ".exe":
        name = name[:-4]
    return name or text


# -- option scanning -------------------------------------------------------------


def _one_option(
    words: Sequence[Word], index: int, short_args: str, long_args: frozenset[str]
) -> int:
    """Index after the option at ``index`` (and its argument, if it takes one)."""
    text = words[index].value
    if text.startswith("--"):
        return index + (2 if "=" not in text and text in long_args else 1)
    for position in range(1, len(text)):
        if text[position] in short_args:
            return index + (2 if position == len(text) - 1 else 1)
    return index + 1


def _skip_options(
    words: Sequence[Word],
    start: int,
    short_args: str = "",
    long_args: frozenset[str] = frozenset(),
) -> int:
    """Index of the first word after the options that begin at ``start``.

    ``short_args`` are the short options taking an argument (attached, ``-n5``,
    or as the next word); ``long_args`` the long ones (``--user x`` or
    ``--user=x``). ``--`` ends the options; ``-`` alone is not an option.
    """
    index = start
    while index < len(words):
        text = words[index].value
        if text == "--":
            return index + 1
        if len(text) < 2 or text[0] != "-":
            return index
        index = _one_option(words, index, short_args, long_args)
    return min(index, len(words))


def _has_short(text: str, letters: str) -> bool:
    return len(text) > 1 and text[0] == "-" and text[1] != "-" and any(c in letters for c in text)


def _sudo(words: Sequence[Word]) -> int | None:
    for word in words[1:]:
        text = word.value
        if text == "--" or not text.startswith("-"):
            break
        if text in ("--edit", "--list") or _has_short(text, "el"):
            return None  # sudoedit or a permission listing: nothing runs
    return _skip_options(
        words,
        1,
        "ugpCrtUTDR",
        frozenset(
            {
                "--user",
                "--group",
                "--prompt",
                "--close-from",
                "--role",
                "--type",
                "--other-user",
                "--command-timeout",
                "--chdir",
                "--chroot",
                "--host",
            }
        ),
    )


def _command(words: Sequence[Word]) -> int | None:
    for word in words[1:]:
        text = word.value
        if text == "--" or not text.startswith("-"):
            break
        if _has_short(text, "vV"):
            return None  # command -v: a lookup, nothing runs
    return _skip_options(words, 1)


_ENV_LONG = frozenset({"--unset", "--chdir"})


def _env(words: Sequence[Word]) -> int | None:
    index = 1
    while index < len(words):
        text = words[index].value
        if text == "-":
            index += 1
        elif text == "--":
            return index + 1
        elif len(text) < 2 or text[0] != "-":
            return index
        elif text.startswith("--split-string") or (text[1] != "-" and "S" in text):
            return None  # a string split into words: see env_split_body
        else:
            index = _one_option(words, index, "uCP", _ENV_LONG)
    return min(index, len(words))


def env_split_body(words: Sequence[Word]) -> str | None:
    """``env -S "STRING" args...`` runs STRING split into words, then args: that text."""
    index = 1
    while index < len(words):
        text = words[index].value
        if text.startswith("--split-string"):
            if "=" in text:
                string, index = text.split("=", 1)[1], index + 1
            elif index + 1 < len(words):
                string, index = words[index + 1].value, index + 2
            else:
                return None
            break
        if text[:1] == "-" and text[1:2] != "-" and "S" in text:
            attached = text[text.index("S") + 1 :]
            if attached:
                string, index = attached, index + 1
            elif index + 1 < len(words):
                string, index = words[index + 1].value, index + 2
            else:
                return None
            break
        if text == "-" or (text.startswith("-") and text != "--"):
            index = _one_option(words, index, "uCP", _ENV_LONG)
            continue
        return None
    else:
        return None
    return " ".join([string, *(quote(word.value) for word in words[index:])])


def _timeout(words: Sequence[Word]) -> int | None:
    index = _skip_options(words, 1, "sk", frozenset({"--signal", "--kill-after"}))
    return index + 1  # the duration


def _busybox(words: Sequence[Word]) -> int | None:
    return 1 if len(words) > 1 and not words[1].value.startswith("-") else None


_WATCH_LONG = frozenset({"--interval", "--equexit"})


def _watch(words: Sequence[Word]) -> int | None:
    end = _skip_options(words, 1, "nq", _WATCH_LONG)
    if any(w.value == "--exec" or _has_short(w.value, "x") for w in words[1:end]):
        return end
    return None  # the arguments are a shell command line: see watch_body


def _simple(short_args: str = "", long_args: Sequence[str] = ()) -> Callable[[Sequence[Word]], int]:
    long = frozenset(long_args)

    def skip(words: Sequence[Word]) -> int:
        return _skip_options(words, 1, short_args, long)

    return skip


def _positional(
    short_args: str = "", long_args: Sequence[str] = (), count: int = 1, refuse: str = ""
) -> Callable[[Sequence[Word]], int | None]:
    """A wrapper with ``count`` positional arguments before the command (``chroot DIR``,
    ``taskset MASK``); any option letter in ``refuse`` means no command follows."""
    long = frozenset(long_args)

    def skip(words: Sequence[Word]) -> int | None:
        end = _skip_options(words, 1, short_args, long)
        if refuse and any(_has_short(w.value, refuse) for w in words[1:end]):
            return None
        return end + count

    return skip


#: Wrapper name -> function giving the index of the wrapped command (None: not a wrapper use).
WRAPPERS: dict[str, Callable[[Sequence[Word]], int | None]] = {
    "sudo": _sudo,
    "doas": _simple("uC"),
    "pkexec": _simple("", ("--user",)),
    "env": _env,
    "command": _command,
    "builtin": _simple(),
    "exec": _simple("a"),
    "nohup": _simple(),
    "time": _simple("fo", ("--format", "--output")),
    "nice": _simple("n", ("--adjustment",)),
    "timeout": _timeout,
    "gtimeout": _timeout,
    "stdbuf": _simple("ioe", ("--input", "--output", "--error")),
    "ionice": _simple("cnpPu", ("--class", "--classdata", "--pid", "--pgid", "--uid")),
    "setsid": _simple(),
    "unbuffer": _simple(),
    "xargs": _simple(
        "ILnPsdEa",
        (
            "--arg-file",
            "--delimiter",
            "--eof",
            "--max-lines",
            "--max-args",
            "--max-procs",
            "--max-chars",
            "--process-slot-var",
        ),
    ),
    "watch": _watch,
    "busybox": _busybox,
    "chroot": _positional("", ("--userspec", "--groups")),
    "taskset": _positional("", (), 1, refuse="p"),
    "chrt": _positional("TPD", (), 1, refuse="p"),
    "faketime": _positional("fm"),
    "flock": _positional("wE", ("--timeout", "--conflict-exit-code")),
    "runuser": _simple("ugGsw", ("--user", "--group", "--supp-group", "--shell")),
    "strace": _simple("oepsuEIbPXaAS"),
    "ltrace": _simple("oeEpsuaACnFlDL"),
    "unshare": _simple("SGRw"),
    "systemd-run": _simple(
        "upEMH",
        (
            "--unit",
            "--property",
            "--description",
            "--slice",
            "--setenv",
            "--uid",
            "--gid",
            "--nice",
            "--working-directory",
            "--machine",
            "--host",
        ),
    ),
    "caffeinate": _simple("tw"),
    "proxychains": _simple("f"),
    "proxychains4": _simple("f"),
    "torsocks": _simple("uPa"),
}

#: Programs that run a command string given with ``-c`` (``su -c 'cmd' user``).
C_OPTION_PROGRAMS = frozenset({"su", "runuser", "sg", "script", "flock"})


def c_option_body(words: Sequence[Word]) -> str | None:
    """The ``-c CMD`` / ``--command=CMD`` string of ``su``, ``runuser``, ``sg``, ``script``,
    ``flock``; for ``sg group cmd...`` the words after the group."""
    for index in range(1, len(words)):
        text = words[index].value
        if text == "--":
            break
        if text.startswith("--command="):
            return text.split("=", 1)[1]
        short_cluster = len(text) > 1 and text[0] == "-" and text[1] != "-"
        if text == "--command" or (short_cluster and text.endswith("c")):
            return words[index + 1].value if index + 1 < len(words) else None
    if words and words[0].value.rsplit("/", 1)[-1] == "sg" and len(words) > 2:
        return " ".join(word.value for word in words[2:])
    return None


# -- shells and interpreters of command strings ------------------------------------


def shell_body(words: Sequence[Word]) -> tuple[str, str | None]:
    """How a shell is used: ``("command", BODY)`` for ``bash [options] -c BODY``,
    ``("stdin", None)`` when it reads its script from standard input (no script
    argument, ``-s``, ``-``), ``("script", None)`` for ``bash script.sh``."""
    index, command_mode, stdin_mode = 1, False, False
    while index < len(words):
        text = words[index].value
        if text == "--":
            index += 1
            break
        if text in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
            index += 2
            continue
        if text.startswith("--command="):
            return "command", text.split("=", 1)[1]
        if text == "--command":
            command_mode = True
            index += 1
            break
        if text.startswith("--"):
            index += 1
            continue
        if len(text) > 1 and text[0] in "-+":
            if text[0] == "-" and "c" in text[1:]:
                command_mode = True
            if text[0] == "-" and "s" in text[1:]:
                stdin_mode = True
            index += 1
            continue
        break
    if command_mode:
        return "command", (words[index].value if index < len(words) else None)
    if stdin_mode or index >= len(words) or words[index].value in ("-", "/dev/stdin"):
        return "stdin", None
    return "script", None


def watch_body(words: Sequence[Word]) -> str | None:
    """``watch [options] ARGS...`` runs ``sh -c "ARGS..."``: that text."""
    index = _skip_options(words, 1, "nq", _WATCH_LONG)
    if index >= len(words):
        return None
    return " ".join(word.value for word in words[index:])


def cmd_body(words: Sequence[Word]) -> str | None:
    """``cmd [switches] /c TEXT``: TEXT (the words after ``/c`` or ``/k``, joined)."""
    for index in range(1, len(words)):
        text = words[index].wvalue
        lowered = text.lower()
        if lowered in ("/c", "/k", "/r"):
            return " ".join(word.wvalue for word in words[index + 1 :]) or None
        if lowered[:2] in ("/c", "/k") and len(text) > 2 and lowered[2] not in ":":
            return " ".join([text[2:], *(word.wvalue for word in words[index + 1 :])])
        if not text.startswith("/"):
            return " ".join(word.wvalue for word in words[index:])
    return None


_PS_WITH_ARGUMENT = (
    "executionpolicy",
    "ep",
    "windowstyle",
    "version",
    "psconsolefile",
    "configurationname",
    "outputformat",
    "of",
    "inputformat",
    "if",
    "workingdirectory",
    "wd",
    "custompipename",
    "settingsfile",
    "encodedarguments",
    "ea",
)


def powershell_body(words: Sequence[Word]) -> str | None:
    """The script ``powershell``/``pwsh`` would run: ``-Command`` text, a positional
    command, or ``-EncodedCommand`` decoded (base64 of UTF-16LE)."""
    index = 1
    while index < len(words):
        text = words[index].wvalue
        if not text.startswith(("-", "/")) or len(text) < 2:
            return " ".join(word.wvalue for word in words[index:])
        name = text[1:].lower()
        if "command".startswith(name):
            rest = [word.wvalue for word in words[index + 1 :]]
            return " ".join(rest) if rest and rest != ["-"] else None
        if name in ("e", "ec") or (len(name) >= 3 and "encodedcommand".startswith(name)):
            if index + 1 >= len(words):
                return None
            return _decode_powershell(words[index + 1].wvalue)
        if "file".startswith(name):
            return None
        if any(option.startswith(name) for option in _PS_WITH_ARGUMENT) or name in ("w", "o", "i"):
            index += 2
        else:
            index += 1
    return None


def _decode_powershell(text: str) -> str:
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
    except (binascii.Error, ValueError):
        return ""
    return raw.decode("utf-16-le", "replace")


# -- git -------------------------------------------------------------------------

_GIT_FLAGS = frozenset(
    {
        "-p",
        "-P",
        "--paginate",
        "--no-pager",
        "--bare",
        "--no-replace-objects",
        "--literal-pathspecs",
        "--glob-pathspecs",
        "--noglob-pathspecs",
        "--icase-pathspecs",
        "--no-optional-locks",
        "--no-lazy-fetch",
        "--no-advice",
    }
)
_GIT_WITH_ARGUMENT = frozenset(
    {"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--super-prefix", "--config-env"}
)
_GIT_ATTACHED = (
    "--git-dir=",
    "--work-tree=",
    "--namespace=",
    "--super-prefix=",
    "--config-env=",
    "--exec-path=",
)


def git_subcommand_start(words: Sequence[str]) -> int:
    """Index of git's subcommand in ``words`` (``words[0]`` is ``git``): global options
    such as ``-C dir``, ``-c key=value`` and ``--git-dir=...`` skipped."""
    index = 1
    while index < len(words):
        text = words[index]
        if text in _GIT_FLAGS or text.startswith(_GIT_ATTACHED):
            index += 1
        elif text in _GIT_WITH_ARGUMENT:
            index += 2
        elif len(text) > 2 and text[:2] in ("-C", "-c"):
            index += 1  # attached: -C../repo
        else:
            break
    return min(index, len(words))
