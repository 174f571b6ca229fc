"""Small rewrites of an agent's shell commands: quieter pytest, PowerShell chains.

``quiet_pytest``
    ``pytest tests/`` → ``pytest -q -rfE tests/``: progress dots instead of a
    line per test, and a summary line per failure and error. Applied to every
    pytest invocation of the command (``pytest``, ``py.test``, ``python -m
    pytest``, ``uv|poetry|pipenv|pdm|hatch|rye run ...``) at its top level,
    when none of its arguments already sets the verbosity or the report
    (``-q``, ``-v``, ``-r...``, ``--quiet``, ``--verbose``, ``--verbosity``,
    short groups such as ``-xvs``) or asks for help or the version.

``powershell_chains``
    ``&&`` and ``||`` are parse errors in Windows PowerShell 5.1 (PowerShell
    7 has them). By default (``conditional``) a chain keeps its meaning:
    ``a && b`` → ``a; if ($?) { b }``, ``a || b`` → ``a; if (-not $?) { b }``,
    longer chains nested (``a && b && c`` → ``a; if ($?) { b; if ($?) { c }
    }``). Claude Code's PowerShell tool prompt recommends the same
    (``To run B only if A succeeds: `A; if ($?) { B }```). With
    ``conditional=False``, ``a && b`` → ``a; b`` (b runs even when a fails:
    ``cd build && rm -r *`` would then delete where it should not) and ``||``
    is left alone. A statement mixing ``&&`` and ``||`` is left alone (no
    faithful flat form). Only top-level chains are rewritten (not those
    inside ``( )``, ``{ }``, ``$( )``); quotes, here-strings, comments and
    backtick escapes are respected.

``detect_powershell``
    Whether the agent's shell is PowerShell without ``&&`` (Windows
    PowerShell, or an edition the text does not state). What the agents
    write, from their bundles in tests/agents/node_modules (versions pinned
    in tests/agents/package.json):

    * Claude Code 2.1 (system prompt, ``# Environment``): ``Platform:
      win32`` and ``Shell: PowerShell`` (or ``Shell: PowerShell (primary);
      Bash tool also available for POSIX scripts``, or ``Shell: bash`` when
      Git Bash is the shell on Windows: ``&&`` works there); its PowerShell
      tool's description states ``PowerShell edition: Windows PowerShell 5.1
      (powershell.exe)``, ``PowerShell edition: PowerShell 7+ (pwsh)`` or
      ``PowerShell edition: unknown``.
    * Codex 0.171 (``<environment_context>`` in a user message):
      ``<shell>powershell</shell>`` (the shell's name: ``bash``, ``zsh``,
      ``sh``, ``powershell``, ``cmd``; no edition).
    * Gemini CLI 0.61 (the first user message's ``<session_context>``): ``My
      operating system is: win32``; its ``run_shell_command`` description:
      ``This tool executes a given shell command as `powershell.exe
      -NoProfile -Command <command>``` on Windows (``bash -c`` elsewhere).

    So pass the system prompt together with the first user message and the
    tool descriptions. An explicit PowerShell 7 edition answers False; an
    explicit other shell (``Shell: bash``, ``<shell>zsh</shell>``,
    ``<shell>cmd</shell>``, ``as `bash -c```) answers False unless PowerShell
    is named too; a bare ``Platform: win32`` says nothing (cmd.exe and Git
    Bash have ``&&``).

All three are single left-to-right scans: no regular expressions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["detect_powershell", "powershell_chains", "quiet_pytest"]

_RUNNERS = frozenset({"uv", "poetry", "pipenv", "pdm", "hatch", "rye"})
_QUIET_LONG = frozenset({"quiet", "verbose", "verbosity", "help", "version"})
_QUIET_SHORT = frozenset("qvrhV")
# Short options whose value follows in the same word (``-kexpr``): the rest is the value.
_VALUED_SHORT = frozenset("kmpcoWn")


# -- POSIX shell text: top-level simple commands and their words ------------------------


@dataclass(frozen=True, slots=True)
class _Word:
    value: str
    start: int
    end: int
    #: The word as written (Windows paths keep their backslashes).
    raw: str


def _skip_quoted(text: str, i: int) -> int:
    """Index after the quoted string, backtick string or ``$(...)`` starting at ``i``."""
    n = len(text)
    char = text[i]
    if char == "'":
        end = text.find("'", i + 1)
        return n if end < 0 else end + 1
    if char in ('"', "`"):
        i += 1
        while i < n and text[i] != char:
            i += 2 if text[i] == "\\" else 1
        return min(i + 1, n)
    # "$(": to the matching parenthesis, quotes inside respected
    depth, i = 1, i + 2
    while i < n and depth:
        c = text[i]
        if c in "'\"`":
            i = _skip_quoted(text, i)
            continue
        if c == "\\":
            i += 2
            continue
        depth += c == "("
        depth -= c == ")"
        i += 1
    return min(i, n)


def _simple_commands(text: str) -> list[tuple[int, int]]:
    """Spans of the top-level simple commands (split at ``; & && || | |&``, newlines,
    parentheses and comments)."""
    spans: list[tuple[int, int]] = []
    start, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
        elif c in "'\"`" or (c == "$" and text[i + 1 : i + 2] == "("):
            i = _skip_quoted(text, i)
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
            end = text.find("\n", i)
            spans.append((start, i))
            i = start = n if end < 0 else end
        elif c in ";&|\n()":
            if c == "&" and ((i > 0 and text[i - 1] in "<>") or text[i + 1 : i + 2] == ">"):
                i += 1  # a redirection: 2>&1, &>file
                continue
            spans.append((start, i))
            i += 1
            start = i
        else:
            i += 1
    spans.append((start, n))
    return [(a, b) for a, b in spans if text[a:b].strip()]


def _words(text: str, start: int, end: int) -> list[_Word]:
    words: list[_Word] = []
    i = start
    while i < end:
        if text[i] in " \t\n":
            i += 1
            continue
        begin = i
        value: list[str] = []
        while i < end and text[i] not in " \t\n":
            c = text[i]
            if c == "\\" and i + 1 < end:
                value.append(text[i + 1])
                i += 2
            elif c in "'\"":
                close = min(_skip_quoted(text, i), end)
                value.append(text[i + 1 : close - 1] if close - 1 > i else text[i + 1 : close])
                i = close
            else:
                value.append(c)
                i += 1
        words.append(_Word("".join(value), begin, i, text[begin:i]))
    return words


def _base(word: _Word) -> str:
    """The program name of a word: no directory (``/`` or ``\\``), no ``.exe``, lower case."""
    name = word.raw.strip("'\"").replace("\\", "/").rsplit("/", 1)[-1].lower()
    return name[:-4] if name.endswith(".exe") else name


def _is_python(name: str) -> bool:
    rest = name.removeprefix("python")
    return name == "py" or (rest != name and all(c.isdigit() or c == "." for c in rest))


def _pytest_insertion(words: list[_Word]) -> tuple[int, list[_Word]] | None:
    """Where the flags go (after the pytest word) and pytest's arguments."""
    i = 0
    while i < len(words) and "=" in words[i].value and not words[i].value.startswith("-"):
        i += 1  # NAME=value
    while i + 1 < len(words) and _base(words[i]) in _RUNNERS and words[i + 1].value == "run":
        i += 2
    if i >= len(words):
        return None
    name = _base(words[i])
    if name in ("pytest", "py.test"):
        return words[i].end, words[i + 1 :]
    if _is_python(name):
        for j in range(i + 1, len(words) - 1):
            if words[j].value == "-m":
                if words[j + 1].value in ("pytest", "py.test"):
                    return words[j + 1].end, words[j + 2 :]
                return None
            if not words[j].value.startswith("-"):
                return None
    return None


def _sets_output(args: list[_Word]) -> bool:
    for word in args:
        arg = word.value
        if arg == "--":
            return False
        if arg.startswith("--"):
            if arg[2:].split("=", 1)[0] in _QUIET_LONG:
                return True
        elif arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter in _QUIET_SHORT:
                    return True
                if letter in _VALUED_SHORT:
                    break
    return False


def quiet_pytest(command: str, flags: str = "-q -rfE") -> str | None:
    """``command`` with ``flags`` after every pytest invocation that sets no
    verbosity or report of its own; None when nothing changed."""
    inserts: list[int] = []
    for start, end in _simple_commands(command):
        found = _pytest_insertion(_words(command, start, end))
        if found is not None and not _sets_output(found[1]):
            inserts.append(found[0])
    if not inserts:
        return None
    out = command
    for position in reversed(inserts):
        out = f"{out[:position]} {flags}{out[position:]}"
    return out


# -- PowerShell text: top-level statements and their chains -----------------------------


def _ps_skip(text: str, i: int) -> int:
    """Index after the quoted string, here-string or block comment starting at ``i``."""
    n = len(text)
    if text.startswith(("@'", '@"'), i):
        quote = text[i + 1]
        newline = text.find("\n", i + 2)
        if newline >= 0 and not text[i + 2 : newline].strip():
            end = text.find(f"\n{quote}@", newline)
            return n if end < 0 else end + 3
        return i + 1  # not a here-string: "@" then an ordinary string
    if text.startswith("<#", i):
        end = text.find("#>", i + 2)
        return n if end < 0 else end + 2
    quote = text[i]
    i += 1
    while i < n:
        c = text[i]
        if c == "`" and quote == '"':
            i += 2
        elif c == quote:
            if text[i + 1 : i + 2] == quote:  # '' or "" inside: an escaped quote
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _ps_statements(text: str) -> list[tuple[int, int, list[tuple[int, int]], list[str]]]:
    """Top-level statements: (start, end, chain segments, chain operators)."""
    statements: list[tuple[int, int, list[tuple[int, int]], list[str]]] = []
    start = segment = 0
    segments: list[tuple[int, int]] = []
    ops: list[str] = []
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == "`":
            i += 2
        elif c in "'\"" or text.startswith(("@'", '@"', "<#"), i):
            i = _ps_skip(text, i)
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n;|&({"):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "({":
            depth += 1
            i += 1
        elif c in ")}":
            depth = max(0, depth - 1)
            i += 1
        elif depth == 0 and text.startswith(("&&", "||"), i):
            segments.append((segment, i))
            ops.append(text[i : i + 2])
            i += 2
            segment = i
        elif depth == 0 and c in ";\n":
            segments.append((segment, i))
            statements.append((start, i, segments, ops))
            i += 1
            start = segment = i
            segments, ops = [], []
        else:
            i += 1
    segments.append((segment, n))
    statements.append((start, n, segments, ops))
    return statements


def _chain(parts: list[str], condition: str) -> str:
    out = parts[-1]
    for part in reversed(parts[:-1]):
        out = f"{part}; if ({condition}) {{ {out} }}"
    return out


def powershell_chains(command: str, *, conditional: bool = True) -> str | None:
    """``command`` with its top-level ``&&``/``||`` chains in Windows PowerShell 5.1
    syntax (see the module docstring); None when nothing changed."""
    edits: list[tuple[int, int, str]] = []
    for _start, _end, segments, ops in _ps_statements(command):
        if not ops:
            continue
        parts = [command[a:b].strip() for a, b in segments]
        if not all(parts) or len(set(ops)) > 1:
            continue
        if ops[0] == "&&":
            rewritten = _chain(parts, "$?") if conditional else "; ".join(parts)
        elif conditional:
            rewritten = _chain(parts, "-not $?")
        else:
            continue
        first, last = segments[0][0], segments[-1][1]
        # Keep the statement's surrounding blanks.
        while first < last and command[first] in " \t\r":
            first += 1
        while last > first and command[last - 1] in " \t\r":
            last -= 1
        edits.append((first, last, rewritten))
    if not edits:
        return None
    out = command
    for first, last, rewritten in reversed(edits):
        out = out[:first] + rewritten + out[last:]
    return out


# -- which shell the agent uses ----------------------------------------------------------

_PS7 = ("powershell edition: powershell 7",)
_POWERSHELL = (
    "shell: powershell",
    "<shell>powershell</shell>",
    "<shell>pwsh</shell>",
    "powershell edition: windows powershell",
    "powershell edition: unknown",
    "as `powershell.exe",
)
_OTHER_SHELL = (
    "shell: bash",
    "shell: zsh",
    "shell: sh",
    "shell: fish",
    "<shell>bash</shell>",
    "<shell>zsh</shell>",
    "<shell>sh</shell>",
    "<shell>cmd</shell>",
    "as `bash -c",
)
_GEMINI_WINDOWS = ("my operating system is: win32",)


def detect_powershell(system_prompt: str) -> bool:
    """The agent runs commands in PowerShell without ``&&`` (Windows PowerShell or an
    unstated edition), judged from what Claude Code, Codex and Gemini CLI write about
    their shell (see the module docstring for the texts and where they are)."""
    text = system_prompt.lower()
    if any(phrase in text for phrase in _PS7):
        return False
    if any(phrase in text for phrase in _POWERSHELL):
        return True
    if any(phrase in text for phrase in _OTHER_SHELL):
        return False
    return any(phrase in text for phrase in _GEMINI_WINDOWS)
