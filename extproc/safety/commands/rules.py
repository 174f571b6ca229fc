"""Dangerous-command rules, as data.

A :class:`CommandRule` is an RE2 ``pattern`` matched, from its start, against
the ``text`` of each normalised simple command (see
:mod:`extproc.safety.commands.normalize`): the program name first
(``/usr/bin/git -C x reset --hard`` reads ``git reset --hard``), arguments
separated by single spaces, arguments that hold blanks or shell characters
single-quoted (``docker rm -f '$(docker ps -aq)'``), redirections last as
operator and target (``echo x > /dev/sda``), a heredoc as ``<<<`` and its
quoted body. Matching from the start means ``echo "git reset --hard"`` never
matches a git rule; a rule about something later in the command says so
(``(?:.* )?> /etc/``). ``(?: |$)`` ends an argument. RE2 runs in linear time,
so no command text can make matching slow.

``unless``
    A pattern searched anywhere in the same text that exempts a match
    (``git clean -n``: a dry run).
``after``
    Makes the rule a pipeline rule: the command must read, through ``|``, the
    output of an earlier stage of the same pipeline whose text ``after``
    matches from its start (``curl ... | sh``, ``base64 -d | bash``). Wrappers are already gone
    (``curl x | sudo -E bash -`` has the stages ``curl x`` and ``bash -``).
``raw``
    The pattern is searched in the whole cleaned command text instead (the
    fork bomb ``:(){ :|:& };:``, whose shape normalisation takes apart).

Decisions (what is deliberately *not* blocked, or blocked though common)
    * ``git push --force-with-lease`` is blocked like ``--force``: it still
      rewrites the remote's history (it only checks that nobody pushed since).
    * ``git rebase`` (also ``-i``) and ``git commit --amend`` are not blocked:
      they rewrite local, unpublished history that the reflog keeps.
    * ``git stash drop`` is blocked with ``git stash clear``: the dropped
      change is only recoverable by hunting dangling commits.
    * ``git checkout -- <file>`` (any pathspec after ``--``) is blocked: it
      silently discards uncommitted work, as ``git restore <file>`` does.
    * ``helm uninstall`` is not blocked: a release can be installed again and
      persistent volumes usually outlive it.
    * ``aws ec2 terminate-instances`` (and deleting databases, stacks, whole
      projects or resource groups) is blocked: it cannot be undone.
    * ``rm -r`` is blocked only for whole trees (``/``, ``~``, ``$HOME``,
      ``.``, ``..``, ``*``, system directories, a home directory); deleting a
      named directory (``rm -rf ./build``) is normal work. The Windows forms
      (``Remove-Item -Recurse``, ``rd /s``, ``del /s``) follow the same line.
    * ``find . -name '*.pyc' -delete`` passes; ``find`` deleting from ``/``,
      ``~`` or system directories, or deleting everything under ``.`` (no
      ``-name``-like filter), is blocked.
    * ``shred`` is always blocked (a coding agent never needs it); ``kill -9
      -1``, ``killall5`` and ``pkill``/``killall`` of all of a user's
      processes (``-u`` without a name) are blocked.
    * Downloaded code is blocked when it is executed directly (piped into a
      shell or interpreter reading standard input, ``bash <(curl ...)``,
      ``sh -c "$(curl ...)"``); ``curl ... | jq``, ``curl ... | python3 -m
      json.tool`` and ``curl -O`` pass.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BUILTIN_RULES", "CommandRule"]


@dataclass(frozen=True)
class CommandRule:
    """One dangerous-command rule (see the module docstring)."""

    id: str
    #: Why the command is dangerous (shown to the agent).
    reason: str
    #: What to do instead (shown to the agent).
    suggestion: str
    #: RE2 pattern matched from the start of a normalised simple command's text.
    pattern: str
    #: RE2 pattern that exempts a match (searched anywhere in the same text).
    unless: str | None = None
    #: RE2 pattern for an earlier stage of the same pipeline (a pipeline rule).
    after: str | None = None
    #: Search ``pattern`` in the whole cleaned command text instead.
    raw: bool = False


# -- building blocks ---------------------------------------------------------------

_END = r"(?: |$)"
_ARGS = r"(?: .*)?"
_RECURSIVE = r"(?:-[a-zA-Z]*[rR][a-zA-Z]*|--recursive)"
_SYSTEM_DIRS = (
    r"/(?:etc|usr|var|bin|sbin|boot|lib|lib32|lib64|opt|home|root|sys|proc|dev|srv|mnt|media"
    r"|snap|private|System|Library|Applications|Users|Volumes)/?\*?"
)
#: Whole trees: the root, home directories, the working directory and its parent, globs of them.
_TREE = (
    r"(?:/[/.]*\*?"
    r"|~/?\*?|~/\.\*|~/\.\.(?:/\.\.)*/?\*?"
    r"|\$HOME/?\*?|\$HOME/\.\*|\$HOME/\.\.(?:/\.\.)*/?\*?|'\$\{HOME\}/?\*?'"
    r"|\.\.?/?\*?|\./\.\*|\.\./\.\.(?:/\.\.)*/?\*?|\*|\.\*"
    r"|/(?:home|Users)/[^/ ]+/?\*?"
    r"|/mnt/[a-z]/?\*?|/[a-z]/?\*?|/(?:mnt/)?[a-z]/Users(?:/[^/ ]+)?/?\*?"
    r"|" + _SYSTEM_DIRS + r")"
)
_RECURSIVE_R = r"(?:-R|--recursive|-[a-zA-Z]*R[a-zA-Z]*)"
#: The root and system directories.
_SYSTEM_TREE = r"(?:/[/.]*\*?|" + _SYSTEM_DIRS + r")"
#: System files whose loss or replacement breaks logins, sudo, name resolution or boot.
_ETC_CRITICAL = (
    r"/etc/(?:passwd|shadow|group|gshadow|sudoers|sudoers\.d/[^ ]+|hosts|fstab|crypttab"
    r"|resolv\.conf|hostname|environment|profile|bashrc|ld\.so\.preload|ld\.so\.conf"
    r"|crontab|inittab|machine-id|nsswitch\.conf|login\.defs|ssh/sshd?_config|pam\.d/[^ ]+"
    r"|security/[^ ]+|default/grub)"
)
#: The root, home directories and system directories (not the working directory).
_ROOTISH = (
    r"(?:/[/.]*\*?|~/?\*?|\$HOME/?\*?|'\$\{HOME\}/?\*?'|/(?:home|Users)/[^/ ]+/?\*?|"
    + _SYSTEM_DIRS
    + r")"
)
#: Windows whole trees (used with (?i)): drive roots, profile and system folders, *, ., ..
_WTREE = (
    r"'?(?:[a-z]:[\\/]?\*?(?:\.\*)?|[\\/]\*?|~[\\/]?\*?|\$home[\\/]?\*?"
    r"|\$env:(?:userprofile|homepath|homedrive|systemroot|windir|systemdrive|programfiles"
    r"|programdata|appdata|localappdata)[\\/]?\*?"
    r"|%(?:userprofile|homepath|homedrive|systemroot|windir|systemdrive|programfiles"
    r"|programdata|appdata|localappdata)%[\\/]?\*?"
    r"|[a-z]:[\\/](?:windows|users|program files|program files \(x86\)|programdata)"
    r"(?:[\\/][^\\/' ]+)?[\\/]?\*?"
    r"|\*|\*\.\*|\.|\.\.|\.[\\/]\*?(?:\.\*)?)'?"
)
_SHELL = r"(?:(?:ba|z|da|k|a|mk|y|fi|c|tc|r)?sh)"
_INTERPRETER = (
    r"(?:" + _SHELL + r"|python[0-9.]*|pypy[0-9.]*|perl|ruby|node|nodejs|php|lua|Rscript)"
)
#: An interpreter that executes its standard input: no script argument, no -c/-e code.
_STDIN_SINK = (
    r"^" + _INTERPRETER + r"(?: (?:-[a-zA-Z]+|--[a-z-]+|-o [a-z]+))*"
    r"(?: (?:-|--|/dev/stdin)(?: .*)?)?(?: [0-9&]*[<>].*)?$"
    r"|(?i:^(?:iex|invoke-expression)(?: |$))"
    r"|(?i:^(?:powershell|pwsh)(?: .*)? -(?:c|command) -(?: |$))"
)
_DOWNLOADER = (
    r"(?i)^(?:curl|wget|fetch|aria2c|http|https|xh|lwp-request|GET|iwr|irm"
    r"|invoke-webrequest|invoke-restmethod)(?: |$)"
)
_DECODER = (
    r"^(?:base64(?: .*)? (?:-d|--decode|-D|-[a-zA-Z]*d[a-zA-Z]*)"
    r"|basenc(?: .*)? (?:-d|--decode)"
    r"|openssl (?:enc|base64)(?: .*)? -d"
    r"|xxd(?: .*)? -r|uudecode|certutil(?: .*)? -decode)(?: |$)"
)
_SQL_CLIENTS = (
    r"psql|mysql|mariadb|sqlite3?|sqlcmd|clickhouse-client|clickhouse|duckdb|cqlsh"
    r"|cockroach|mycli|pgcli|usql|snowsql|trino|presto|isql|osql|sqlplus"
)
#: SQL that destroys data (used with (?is)): DROP, TRUNCATE, DELETE without WHERE.
_SQL_DESTRUCTIVE = (
    r"\b(?:drop\s+(?:database|schema|table|keyspace)\b"
    r"|truncate\s+(?:table\s+)?[a-z_\x60\x22\[]"
    r"|delete\s+from\s+[a-z0-9_.\x60\x22\[\]]+\s*(?:;|'|$))"
)


def _long(name: str, unique: int) -> str:
    """``--name`` and the abbreviations git accepts for it: ``_long("hard", 2)`` matches
    ``--ha``, ``--har`` and ``--hard`` (git takes any unambiguous prefix of a long option)."""
    tail = ""
    for char in reversed(name[unique:]):
        tail = f"(?:{char}{tail})?" if char != "-" else f"(?:-{tail})?"
    return "--" + name[:unique] + tail


def _rule(
    id: str,
    reason: str,
    suggestion: str,
    *patterns: str,
    unless: str | None = None,
    after: str | None = None,
    raw: bool = False,
) -> CommandRule:
    pattern = patterns[0] if len(patterns) == 1 else "|".join(f"(?:{p})" for p in patterns)
    return CommandRule(id, reason, suggestion, pattern, unless=unless, after=after, raw=raw)


_GIT: tuple[CommandRule, ...] = (
    _rule(
        "git-reset-hard",
        "git reset --hard (or --merge/--keep) throws away uncommitted changes in the working "
        "tree and index, with no way to get them back",
        "commit or `git stash` the changes first; to move the branch but keep the work use "
        "`git reset --soft` or `git reset --mixed` (the default)",
        r"^git reset"
        + _ARGS
        + " (?:"
        + _long("hard", 2)
        + "|"
        + _long("merge", 2)
        + "|"
        + _long("keep", 1)
        + ")"
        + _END,
    ),
    _rule(
        "git-clean-force",
        "git clean -f deletes untracked files (with -x also ignored ones, with -d whole "
        "directories); they are not in git, so they cannot be restored",
        "run `git clean -n` (dry run) to see what would go, then delete specific paths, "
        "e.g. `rm -rf ./build`",
        r"^git clean" + _ARGS + r" (?:-[a-zA-Z]*f[a-zA-Z]*|" + _long("force", 1) + ")" + _END,
        unless=r"^git clean"
        + _ARGS
        + r" (?:-[a-zA-Z]*n[a-zA-Z]*|"
        + _long("dry-run", 1)
        + ")"
        + _END,
    ),
    _rule(
        "git-checkout-discard",
        "this git checkout overwrites files in the working tree and silently discards their "
        "uncommitted changes",
        "`git stash` the changes first (or commit them); to switch branches use "
        "`git switch <branch>`, to create one `git checkout -b <name>`",
        r"^git checkout" + _ARGS + r" --(?: [^ ]+)+",
        r"^git checkout" + _ARGS + r" (?:\.|\./|\./\*|\*|:/)" + _END,
        r"^git checkout" + _ARGS + r" (?:-f|-[a-zA-Z]*f[a-zA-Z]*|" + _long("force", 2) + ")" + _END,
        unless=r" (?:--ours|--theirs|-p|--patch)" + _END,
    ),
    _rule(
        "git-switch-discard",
        "git switch --discard-changes/--force throws away uncommitted changes",
        "commit or `git stash` the changes, then `git switch <branch>`",
        r"^git switch"
        + _ARGS
        + r" (?:-f|"
        + _long("discard-changes", 2)
        + "|"
        + _long("force", 2)
        + ")"
        + _END,
    ),
    _rule(
        "git-restore-staged-worktree",
        "git restore --staged --worktree discards the staged and the working-tree changes",
        "`git stash` the changes first; to unstage only, use `git restore --staged <file>`",
        r"^git restore"
        + _ARGS
        + r" (?:-W|-[a-zA-Z]*W[a-zA-Z]*|"
        + _long("worktree", 1)
        + ")"
        + _END,
    ),
    _rule(
        "git-restore-worktree",
        "git restore of working-tree files discards their uncommitted changes for good",
        "`git stash` the changes (or commit them); to unstage only, use "
        "`git restore --staged <file>`",
        r"^git restore" + _END,
        unless=r" (?:-S|" + _long("staged", 2) + ")" + _END,
    ),
    _rule(
        "git-push-force",
        "a force push (--force, -f, --force-with-lease, +refspec) rewrites the remote branch's "
        "history and can destroy other people's commits",
        "pull and rebase or merge, then push normally (`git pull --rebase && git push`); if "
        "history really must be rewritten, ask the user to do it",
        r"^git push"
        + _ARGS
        + r" (?:--force|"
        + _long("force-with-lease", 7)
        + r"(?:=[^ ]*)?|"
        + _long("force-if-includes", 7)
        + r"|-f|-[a-zA-Z]*f[a-zA-Z]*|\+[^ ]+)"
        + _END,
    ),
    _rule(
        "git-push-mirror",
        "git push --mirror makes the remote an exact copy of the local repository, deleting "
        "every remote branch and tag that is not local",
        "push the branches you mean explicitly: `git push origin <branch>`",
        r"^git push" + _ARGS + " " + _long("mirror", 3) + _END,
    ),
    _rule(
        "git-push-delete",
        "this push deletes branches or tags on the remote (--delete, :branch, --prune)",
        "leave remote branches alone; ask the user to delete them",
        r"^git push"
        + _ARGS
        + r" (?:-d|:[^ ]+|"
        + _long("delete", 3)
        + "|"
        + _long("prune", 3)
        + ")"
        + _END,
    ),
    _rule(
        "git-branch-force-delete",
        "git branch -D deletes a branch even when its commits are merged nowhere",
        "use `git branch -d <branch>`, which refuses to delete unmerged work",
        r"^git branch" + _ARGS + r" (?:-D|-[a-zA-Z]*D[a-zA-Z]*"
        r"|-[a-zA-Z]*d[a-zA-Z]*f[a-zA-Z]*|-[a-zA-Z]*f[a-zA-Z]*d[a-zA-Z]*)" + _END,
        r"^git branch"
        + _ARGS
        + " (?:-d|"
        + _long("delete", 3)
        + ")"
        + _ARGS
        + " (?:-f|"
        + _long("force", 4)
        + ")"
        + _END,
        r"^git branch"
        + _ARGS
        + " (?:-f|"
        + _long("force", 4)
        + ")"
        + _ARGS
        + " (?:-d|"
        + _long("delete", 3)
        + ")"
        + _END,
    ),
    _rule(
        "git-history-rewrite",
        "git filter-branch/filter-repo rewrites the whole history of the repository",
        "ask the user; to drop a file from future commits use `git rm --cached <file>`",
        r"^git (?:filter-branch|filter-repo)" + _END,
        r"^git-filter-repo" + _END,
    ),
    _rule(
        "git-reflog-expire",
        "expiring or deleting reflog entries removes the safety net for recovering lost commits",
        "leave the reflog alone; git expires it on its own schedule",
        r"^git reflog (?:expire|delete)" + _END,
    ),
    _rule(
        "git-gc-prune-now",
        "git gc --prune=now deletes unreachable objects immediately: lost commits can no "
        "longer be recovered",
        "run plain `git gc` (it keeps recent unreachable objects for two weeks)",
        r"^git gc" + _ARGS + " " + _long("prune", 3) + r"=(?:now|all)" + _END,
    ),
    _rule(
        "git-prune",
        "git prune deletes unreachable objects, the last copy of lost or dropped work",
        "run `git prune -n` to see what it would remove, or plain `git gc`",
        r"^git prune" + _END,
        unless=r" (?:-n|--dry-run)" + _END,
    ),
    _rule(
        "git-stash-destroy",
        "git stash clear/drop deletes stashed changes, recoverable only by hunting dangling "
        "commits",
        "keep the stash (`git stash list`); to use it, `git stash pop` or `git stash apply`",
        r"^git stash (?:clear|drop)" + _END,
    ),
    _rule(
        "git-update-ref-delete",
        "git update-ref -d deletes a ref directly, bypassing the safety checks of git branch",
        "use `git branch -d <branch>` (refuses unmerged work) or ask the user",
        r"^git update-ref" + _ARGS + r" -d" + _END,
    ),
    _rule(
        "git-replace",
        "git replace swaps objects for others behind the scenes, changing what history shows",
        "ask the user; to change a commit use `git commit --amend` or a rebase on an "
        "unpublished branch",
        r"^git replace(?: (?:-f|--force|--raw))* (?:--graft|--edit|-e|--convert-graft-file"
        r"|[^- ][^ ]* [^ ]+)" + _END,
    ),
    _rule(
        "git-rm-all",
        "git rm of the whole tree deletes every tracked file from disk",
        "remove specific files (`git rm <file>`), or untrack without deleting with "
        "`git rm -r --cached <path>`",
        r"^git rm" + _ARGS + r" (?:\.|\./|\./\*|\*|:/)" + _END,
        unless=" " + _long("cached", 2) + _END,
    ),
)

_FILESYSTEM: tuple[CommandRule, ...] = (
    _rule(
        "rm-no-preserve-root",
        "rm --no-preserve-root switches off the protection against deleting /",
        "delete the specific directory you mean, e.g. `rm -rf ./build`",
        r"^rm" + _ARGS + r" --no-preserve-root" + _END,
    ),
    _rule(
        "rm-recursive-root",
        "recursive rm of a whole tree (/, ~, $HOME, ., .., *, a system or home directory) "
        "deletes far more than any task needs, irrecoverably",
        "delete the specific directory you mean, e.g. `rm -rf ./build` or `rm -rf node_modules`",
        r"^rm" + _ARGS + " " + _RECURSIVE + _ARGS + " " + _TREE + _END,
        r"^rm" + _ARGS + " " + _TREE + _ARGS + " " + _RECURSIVE + _END,
    ),
    _rule(
        "find-delete",
        "find with -delete or -exec rm over /, home or system directories, or over the whole "
        "working tree without a name filter, deletes everything it finds",
        "narrow it: `find . -name '*.pyc' -delete`, and run it without -delete first to see "
        "what matches",
        r"^find(?: -[HLP])* " + _ROOTISH + _ARGS + r" (?:-delete|(?:-exec|-execdir|-ok|-okdir) "
        r"(?:rm|shred|unlink))" + _END,
        r"^find(?: (?:-[HLP]|\.|\./|\.\.|\*))*(?: (?:-type [a-z]|-mindepth [0-9]+"
        r"|-maxdepth [0-9]+|-depth|-xdev|-mount|-follow|-print0?))* (?:-delete|(?:-exec"
        r"|-execdir) (?:rm|unlink))" + _END,
    ),
    _rule(
        "shred",
        "shred overwrites files or devices so that nothing can ever be recovered",
        "to delete a file, use `rm <file>`; leave disks alone",
        r"^shred" + _END,
    ),
    _rule(
        "disk-wipe",
        "this wipes filesystem signatures or discards whole devices (wipefs -a, blkdiscard, "
        "sgdisk --zap-all)",
        "do not touch disks or partitions; ask the user",
        r"^wipefs" + _ARGS + r" (?:-a|--all|-[a-zA-Z]*a[a-zA-Z]*|-o|--offset)" + _END,
        r"^blkdiscard" + _END,
        r"^sgdisk" + _ARGS + r" (?:-Z|--zap-all|-o|--clear)" + _END,
        unless=r" (?:-n|--no-act)" + _END,
    ),
    _rule(
        "disk-format",
        "this creates a new filesystem on a device (or erases a disk), destroying everything on it",
        "do not format devices; to try a filesystem, format an image file (`mkfs.ext4 ./disk.img`)",
        r"^(?:mkfs(?:\.[a-z0-9]+)?|mke2fs|mkswap|mkntfs|mkdosfs|mkexfatfs|newfs(?:_[a-z]+)?)"
        + _ARGS
        + r" /dev/[^ ]+",
        r"^diskutil (?:eraseDisk|eraseVolume|zeroDisk|randomDisk|secureErase|partitionDisk)" + _END,
        r"^parted" + _ARGS + r" (?:mklabel|mktable)" + _END,
    ),
    _rule(
        "dd-to-device",
        "dd onto a device overwrites the disk (partition table, filesystems, data)",
        "write images to a file (`dd if=... of=./disk.img`), never to /dev",
        r"^dd" + _ARGS + r" of=/dev/[^ ]+",
        unless=r" of=/dev/(?:null|zero|stdout|stderr|tty|fd/[0-9]+)" + _END,
    ),
    _rule(
        "block-device-write",
        "writing to a block device (> /dev/sda, tee or cp onto /dev/...) destroys its data",
        "write to a regular file instead",
        r"(?:.* )?(?:[0-9]*>|>>|&>|&>>|[0-9]*>>|[0-9]*>\|) /dev/(?:sd[a-z]|hd[a-z]|vd[a-z]"
        r"|xvd[a-z]|nvme[0-9]|mmcblk[0-9]|disk[0-9]|rdisk[0-9]|mapper/|md[0-9]|dm-[0-9]"
        r"|loop[0-9]|sr[0-9]|mem|kmem|port)[^ ]*" + _END,
        r"^(?:tee|cp|pv)" + _ARGS + r" /dev/(?:sd[a-z]|hd[a-z]|vd[a-z]|xvd[a-z]|nvme[0-9]"
        r"|mmcblk[0-9]|disk[0-9]|rdisk[0-9]|mapper/|md[0-9]|dm-[0-9])[^ ]*"
        r"(?: [0-9&]*[<>].*)?$",
    ),
    _rule(
        "chmod-recursive-system",
        "recursively changing permissions or owners of /, system directories (or the "
        "permissions of a home directory) breaks the system: sudo, ssh and services refuse "
        "to work",
        "change only your project's files, e.g. `chmod -R u+w ./src`",
        r"^chmod" + _ARGS + " " + _RECURSIVE_R + _ARGS + " " + _ROOTISH + _END,
        r"^(?:chown|chgrp)" + _ARGS + " " + _RECURSIVE_R + _ARGS + " " + _SYSTEM_TREE + _END,
    ),
    _rule(
        "etc-overwrite",
        "this truncates a file in /etc or overwrites a critical system file (passwd, shadow, "
        "sudoers, hosts, fstab, ...)",
        "edit the file with the user's consent (append with `>>` or `tee -a` if you must), "
        "keeping a backup",
        r"(?:(?::|true) )?(?:[0-9]*>|&>|[0-9]*>\|) /etc/[^ ]+",
        r"(?:.* )?(?:[0-9]*>|&>|[0-9]*>\|) " + _ETC_CRITICAL + _END,
        r"^truncate" + _ARGS + r" /etc/[^ ]+",
        r"^tee(?: (?:-i|-p|--ignore-interrupts|--output-error(?:=[^ ]*)?))* "
        + _ETC_CRITICAL
        + _END,
        r"^cp" + _ARGS + r" /dev/null /etc/[^ ]+",
    ),
    _rule(
        "rm-git-directory",
        "deleting .git destroys the repository's whole history, unpushed commits and stashes",
        "leave .git alone; to start over on a branch use `git switch --orphan <name>`",
        r"^rm" + _ARGS + " " + _RECURSIVE + _ARGS + r" (?:\./)?\.git/?" + _END,
        r"^rm" + _ARGS + r" (?:\./)?\.git/?" + _ARGS + " " + _RECURSIVE + _END,
    ),
    _rule(
        "mv-to-dev-null",
        "moving files to /dev/null destroys them (and can replace /dev/null itself)",
        "delete the specific file with `rm <file>` if that is really meant",
        r"^mv" + _ARGS + r" /dev/null(?: [0-9&]*[<>].*)?$",
    ),
)

_REMOTE: tuple[CommandRule, ...] = (
    _rule(
        "curl-pipe-shell",
        "piping downloaded content straight into a shell or interpreter runs unreviewed "
        "remote code",
        "download to a file (`curl -fsSLo install.sh URL`), read it, then run it if it is safe; "
        "or use the package manager",
        _STDIN_SINK,
        after=_DOWNLOADER,
    ),
    _rule(
        "remote-script-exec",
        "this executes downloaded code directly ($(curl ...), <(curl ...)) without review",
        "download to a file, read it, then run it if it is safe",
        r"^'(?:\$\( *|\x60 *)(?:curl|wget|fetch|iwr|irm)(?: |\)|\x60)",
        r"^(?:source|\.|" + _INTERPRETER + r")(?: -[^ ]+)* '<\( *(?:curl|wget|fetch)(?: |\))",
        r"^" + _INTERPRETER + _ARGS + r" -[a-zA-Z]*[ce] '(?:\$\(|\x60) *(?:curl|wget|fetch)"
        r"(?: |\)|\x60)",
    ),
    _rule(
        "powershell-download-exec",
        "Invoke-Expression of downloaded content runs unreviewed remote code",
        "download to a file, read it, then run it if it is safe",
        r"(?i)\b(?:iex|invoke-expression)\b[^\n]{0,200}(?:downloadstring|\biwr\b|\birm\b"
        r"|invoke-webrequest|invoke-restmethod|net\.webclient)",
        r"(?i)(?:downloadstring|\biwr\b|\birm\b|invoke-webrequest|invoke-restmethod)[^\n]*\|\s*"
        r"(?:iex|invoke-expression)\b",
        raw=True,
    ),
    _rule(
        "decoded-pipe-shell",
        "piping decoded (base64/hex) text into a shell runs hidden code",
        "decode to a file or the screen, read it, and run the plain commands if they are safe",
        _STDIN_SINK,
        after=_DECODER,
    ),
    _rule(
        "decoded-exec",
        "this executes decoded (base64) text as a command, hiding what actually runs",
        "decode it first, read it, and run the plain commands if they are safe",
        r"^'(?:\$\(|\x60).*\b(?:base64|basenc)(?: .*)? (?:-d|--decode|-D)(?: |\)|\x60)",
        r"^" + _INTERPRETER + _ARGS + r" -[a-zA-Z]*[ce] '(?:\$\(|\x60).*\bbase64(?: .*)? "
        r"(?:-d|--decode|-D)(?: |\)|\x60)",
    ),
)

_PROCESSES: tuple[CommandRule, ...] = (
    _rule(
        "fork-bomb",
        "this is a fork bomb: it multiplies processes until the machine stops responding",
        "do not run it",
        r"(?:^|[\s;&|(])[^\s(){}|&;<>]+\s*\(\s*\)\s*\{\s*[^\s(){}|&;<>]+\s*[|&]\s*"
        r"[^\s(){}|&;<>]+\s*&",
        r"\bfunction\s+[^\s(){}]+\s*(?:\(\s*\))?\s*\{\s*[^\s(){}|&;<>]+\s*[|&]\s*"
        r"[^\s(){}|&;<>]+\s*&",
        raw=True,
    ),
    _rule(
        "fork-bomb-interpreter",
        "this forks processes in an endless loop until the machine stops responding",
        "do not run it",
        r"(?s)^(?:perl|python[0-9.]*|ruby|node|php)" + _ARGS + r"(?:fork while fork|while ?\(?"
        r"(?:1|True|true)\)? ?:? ?(?:\{ ?)?(?:os\.)?fork\(\)|loop ?\{ ?fork)",
    ),
    _rule(
        "kill-all-processes",
        "this kills every process the user may signal (kill -1, killall5), the agent and the "
        "user's session included",
        "kill the specific process: `kill <pid>` or `pkill -f <pattern>`",
        r"^kill(?: -[^ ]+)+ -1" + _END,
        r"^kill -(?:s|n) [^ ]+ -1" + _END,
        r"^killall5" + _END,
    ),
    _rule(
        "kill-user-processes",
        "killing all of a user's processes (pkill/killall -u without a name) ends their whole "
        "session",
        "kill the specific process: `pkill -u <user> <name>` or `kill <pid>`",
        r"^(?:pkill|killall)(?: (?:-[0-9]+|-[A-Z]+|-SIG[A-Z]+|--signal(?:=| )[^ ]+|-s [^ ]+"
        r"|-e|--echo))* (?:-u|-U|--euid|--uid|--user) [^ ]+(?: (?:-[0-9]+|-[A-Z]+|-SIG[A-Z]+"
        r"|--signal(?:=| )[^ ]+|-s [^ ]+|-e|--echo))*$",
    ),
    _rule(
        "system-shutdown",
        "this shuts down or reboots the machine",
        "do not power off or reboot; restart the specific service instead "
        "(e.g. `systemctl restart <service>`) or ask the user",
        r"^(?:shutdown|reboot|halt|poweroff)" + _END,
        r"^(?:init|telinit) [06]" + _END,
        r"^systemctl" + _ARGS + r" (?:poweroff|reboot|halt|kexec|soft-reboot)" + _END,
        r"(?i)^(?:stop-computer|restart-computer)" + _END,
        unless=r"^shutdown" + _ARGS + r" (?:-c|/a)" + _END,
    ),
    _rule(
        "firewall-disable",
        "this flushes or disables the firewall, exposing every service on the machine",
        "add or remove the specific rule you need",
        r"^(?:iptables|ip6tables|iptables-legacy|iptables-nft|ip6tables-legacy)"
        + _ARGS
        + r" (?:-F|--flush)"
        + _END,
        r"^nft" + _ARGS + r" flush ruleset" + _END,
        r"^ufw" + _ARGS + r" (?:disable|reset)" + _END,
        r"^systemctl (?:stop|disable|mask)(?: .*)? (?:firewalld|ufw|nftables|iptables)" + _END,
        r"(?i)^netsh advfirewall set [a-z]+ state off" + _END,
    ),
    _rule(
        "crontab-remove",
        "crontab -r deletes all of the user's scheduled jobs without a prompt",
        "edit the one entry with `crontab -e`, after `crontab -l > crontab.bak`",
        r"^crontab" + _ARGS + r" -[a-zA-Z]*r[a-zA-Z]*" + _END,
        unless=r" -[a-zA-Z]*i[a-zA-Z]*" + _END,
    ),
)

_WINDOWS: tuple[CommandRule, ...] = (
    _rule(
        "windows-recursive-delete",
        "recursive delete of a drive, a profile or system folder, or everything here "
        "(Remove-Item -Recurse, rd /s, del /s) is irrecoverable",
        "delete the specific folder you mean, e.g. `Remove-Item -Recurse -Force .\\build`",
        r"(?i)^(?:remove-item|ri|rm|rmdir|del|erase|rd)" + _ARGS + r" -r(?:e|ec|ecu|ecur|ecurs"
        r"|ecurse)?" + _ARGS + " " + _WTREE + _END,
        r"(?i)^(?:remove-item|ri|rm|rmdir|del|erase|rd)"
        + _ARGS
        + " "
        + _WTREE
        + _ARGS
        + r" -r(?:e|ec|ecu|ecur|ecurs|ecurse)?"
        + _END,
        r"(?i)^(?:rd|rmdir|del|erase)" + _ARGS + r" /s" + _ARGS + " " + _WTREE + _END,
        r"(?i)^(?:rd|rmdir|del|erase)" + _ARGS + " " + _WTREE + _ARGS + r" /s" + _END,
    ),
    _rule(
        "windows-format",
        "this formats or clears a disk or volume, destroying everything on it",
        "do not format disks; ask the user",
        r"(?i)^format '?[a-z]:",
        r"(?i)^(?:format-volume|clear-disk|initialize-disk|remove-partition)" + _END,
    ),
    _rule(
        "diskpart",
        "diskpart edits disks and partitions (clean, delete, format) with no undo",
        "do not partition disks; ask the user",
        r"(?i)^diskpart" + _END,
    ),
    _rule(
        "windows-shadow-delete",
        "this deletes the Volume Shadow Copies or backup catalogs that recovery depends on",
        "leave backups alone; ask the user",
        r"(?i)^vssadmin" + _ARGS + r" delete shadows" + _END,
        r"(?i)^wmic" + _ARGS + r" shadowcopy delete" + _END,
        r"(?i)^wbadmin" + _ARGS + r" delete (?:catalog|systemstatebackup)" + _END,
    ),
)

_DATA: tuple[CommandRule, ...] = (
    _rule(
        "sql-destructive",
        "this SQL drops a database, schema or table, truncates a table or deletes every row",
        "write a migration the user reviews, or back up first (`pg_dump`, `mysqldump`); "
        "to delete rows, add a WHERE clause",
        r"(?is)^(?:(?:docker|podman|kubectl|oc) (?:.* )?exec(?: .*)? )?(?:"
        + _SQL_CLIENTS
        + ")"
        + _ARGS
        + r".*"
        + _SQL_DESTRUCTIVE,
        r"^dropdb" + _END,
        r"^mysqladmin" + _ARGS + r" drop" + _END,
    ),
    _rule(
        "sql-destructive-piped",
        "this pipes SQL that drops or truncates data (or flushes a store) into a database client",
        "write a migration the user reviews, or back up first",
        r"(?i)^(?:" + _SQL_CLIENTS + r"|redis-cli|mongo|mongosh)" + _END,
        after=r"(?is)^(?:echo|printf|cat)"
        + _ARGS
        + r".*(?:"
        + _SQL_DESTRUCTIVE
        + r"|\bflush(?:all|db)\b|dropDatabase\()",
    ),
    _rule(
        "mongo-drop",
        "this drops a MongoDB database or collection, or deletes every document",
        "back up first (`mongodump`) and delete with a filter",
        r"(?s)^(?:mongo|mongosh)" + _ARGS + r".*(?:dropDatabase\(|\.drop\(\)|deleteMany\(\{ *\}\)"
        r"|remove\(\{ *\}\))",
    ),
    _rule(
        "redis-flush",
        "FLUSHALL/FLUSHDB deletes every key in Redis",
        "delete the specific keys (`redis-cli DEL key`) or ask the user",
        r"(?i)^redis-cli" + _ARGS + r" '?(?:flushall|flushdb)(?: |'|$)",
    ),
    _rule(
        "docker-system-prune",
        "docker system prune -a/-f/--volumes deletes all unused images, containers, networks "
        "(and volumes with their data) without asking",
        "remove what you created by name (`docker rm <container>`, `docker rmi <image>`)",
        r"^(?:docker|podman) system prune" + _ARGS + r" (?:-a|--all|-f|--force|--volumes"
        r"|-[a-z]*[af][a-z]*)" + _END,
    ),
    _rule(
        "docker-volume-delete",
        "this deletes Docker volumes, and the data in them, in bulk",
        "remove a specific volume by name (`docker volume rm <name>`) after checking it",
        r"^(?:docker|podman) volume prune" + _END,
        r"^(?:docker|podman) volume rm" + _ARGS + r" '(?:\$\(|\x60)(?:docker|podman) volume ls",
        r"^(?:docker compose|docker-compose|podman-compose)"
        + _ARGS
        + r" down"
        + _ARGS
        + r" (?:-v|--volumes|-[a-z]*v[a-z]*)"
        + _END,
    ),
    _rule(
        "docker-rm-all",
        "this removes every container ($(docker ps -aq)), the user's included",
        "remove the containers you started, by name or id",
        r"^(?:docker|podman) (?:container )?rm" + _ARGS + r" '(?:\$\(|\x60)(?:docker|podman) "
        r"(?:container )?(?:ps|ls)(?: |\)|\x60)",
        unless=r" (?:--filter|-f) [a-z]+=",
    ),
    _rule(
        "docker-rm-all-piped",
        "this removes every container listed by docker ps, the user's included",
        "remove the containers you started, by name or id",
        r"^(?:docker|podman) (?:container )?(?:rm|kill|stop)" + _END,
        after=r"^(?:docker|podman) (?:container )?(?:ps|ls)" + _ARGS + r" -[a-zA-Z]*[aq]",
    ),
    _rule(
        "kubectl-delete-namespace",
        "deleting a namespace deletes everything in it",
        "delete the specific resources you created (`kubectl delete deployment <name> -n <ns>`)",
        r"^kubectl" + _ARGS + r" delete (?:namespaces?|ns)(?:/[^ ]+)?" + _END,
    ),
    _rule(
        "kubectl-delete-all",
        "kubectl delete --all / --all-namespaces deletes every matching resource at once",
        "delete the specific resources by name",
        r"^kubectl"
        + _ARGS
        + r" delete"
        + _ARGS
        + r" (?:--all|-A|--all-namespaces)(?:=true)?"
        + _END,
    ),
    _rule(
        "terraform-destroy",
        "this destroys all the infrastructure the Terraform/OpenTofu state manages",
        "run `terraform plan -destroy` to show what would go and let the user decide; remove "
        "single resources from the configuration instead",
        r"^(?:terraform|tofu|terragrunt)" + _ARGS + r" destroy" + _END,
        r"^(?:terraform|tofu|terragrunt)"
        + _ARGS
        + r" apply"
        + _ARGS
        + r" --?destroy(?:=true)?"
        + _END,
    ),
    _rule(
        "pulumi-destroy",
        "pulumi destroy deletes every resource of the stack (pulumi stack rm its state)",
        "run `pulumi preview --diff` and let the user decide",
        r"^pulumi" + _ARGS + r" (?:destroy|down|stack rm)" + _END,
        unless=r" --preview-only" + _END,
    ),
    _rule(
        "cloud-storage-delete",
        "this deletes a bucket or everything under a storage prefix, irrecoverably",
        "delete specific objects after listing them (`aws s3 ls`, `gsutil ls`)",
        r"^aws" + _ARGS + r" s3 rm" + _ARGS + r" --recursive" + _END,
        r"^aws" + _ARGS + r" s3 rb" + _ARGS + r" --force" + _END,
        r"^aws" + _ARGS + r" s3api delete-bucket" + _END,
        r"^gsutil" + _ARGS + r" (?:rm" + _ARGS + r" -[a-zA-Z]*[rRa][a-zA-Z]*|rb)" + _END,
        r"^gcloud" + _ARGS + r" storage (?:rm" + _ARGS + r" (?:-r|-R|--recursive)"
        r"|buckets delete)" + _END,
        r"^az storage (?:blob delete-batch|container delete|account delete|fs delete)" + _END,
        r"^rclone (?:purge|delete)" + _END,
    ),
    _rule(
        "cloud-resource-delete",
        "this deletes cloud resources that cannot be restored (a whole project or resource "
        "group, instances, databases, stacks)",
        "ask the user; stop instead of terminating (`aws ec2 stop-instances`)",
        r"^gcloud" + _ARGS + r" projects delete" + _END,
        r"^gcloud"
        + _ARGS
        + r" (?:compute instances|sql instances|container clusters) delete"
        + _END,
        r"^az group delete" + _END,
        r"^aws" + _ARGS + r" ec2 terminate-instances" + _END,
        r"^aws" + _ARGS + r" rds delete-db-(?:instance|cluster)" + _END,
        r"^aws" + _ARGS + r" dynamodb delete-table" + _END,
        r"^aws" + _ARGS + r" cloudformation delete-stack" + _END,
    ),
    _rule(
        "gh-repo-delete",
        "gh repo delete deletes a GitHub repository with its issues and history",
        "ask the user; archive it instead (`gh repo archive`)",
        r"^gh repo delete" + _END,
    ),
)

#: The built-in rules, in the order they are reported.
BUILTIN_RULES: tuple[CommandRule, ...] = (
    *_GIT,
    *_FILESYSTEM,
    *_REMOTE,
    *_PROCESSES,
    *_WINDOWS,
    *_DATA,
)
