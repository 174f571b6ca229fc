"""Built-in secret rules, as data.

Each rule is an RE2 pattern for one credential shape. Precision comes first: a
false positive corrupts a user's code, so only shapes with a distinctive prefix
or a distinctive context are here (no "high entropy" guessing: git SHAs, UUIDs,
digests and base64 blobs are never flagged).

Conventions every rule follows (the scanner and the stream redactor rely on them):

* ``group`` is the capture group that is the secret; the rest of the match is
  context (``aws_secret_access_key = "``, ``postgres://user:``, a delimiter).
* A token starts after :data:`LEFT` (start of text, a non-word character or a
  JSON escape such as ``\\n``), so ``task-...`` never yields ``sk-...``.
* A fixed-length token is followed by :data:`RIGHT` (a non-token character or
  the end of the text); variable-length tokens are greedy. Either way, when more
  text could still extend or invalidate a match, the secret group ends exactly
  at the end of the text (which is how the stream redactor knows to hold it).
* No rule's secret spans whitespace, except a private-key block.
* Priority is the order of :data:`BUILTIN_RULES`: when two rules find the same
  span, the earlier rule names the kind (``sk-ant-...`` is an Anthropic key,
  not an OpenAI one).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BUILTIN_RULES",
    "LEFT",
    "PRIVATE_KEY_BEGIN",
    "PRIVATE_KEY_END",
    "RIGHT",
    "WORD_STARTS",
    "SecretRule",
]


@dataclass(frozen=True)
class SecretRule:
    """One credential shape.

    ``pattern`` is RE2 syntax; ``group`` the capture group that is the secret
    (0: the whole match). ``ignore`` is an optional RE2 pattern: a secret text
    that fully matches it is a placeholder, not a secret (``changeme``).
    """

    id: str
    kind: str
    pattern: str
    group: int = 0
    ignore: str = ""


#: Before a token: start of text, a JSON escape (``\n``, ``\r``, ``\t``) or a non-word character.
LEFT = r"(?:\A|\\[nrt]|[^A-Za-z0-9_])"
#: After a fixed-length token: a character that cannot continue it, or the end of the text.
RIGHT = r"(?:[^A-Za-z0-9_-]|\z)"

_KEY_LABEL = r"[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
#: The first line of a PEM / OpenSSH / PGP private-key block.
PRIVATE_KEY_BEGIN = r"-----BEGIN" + _KEY_LABEL
#: The last line of a private-key block.
PRIVATE_KEY_END = r"-----END" + _KEY_LABEL

# A BEGIN line, a line break (real, or the two characters \n inside a JSON
# string), then either base64 (16 characters) or a header line (Proc-Type:,
# Version:). Up to the END line, or to the end of the text when it has none
# (fail closed: a truncated key is still a key). Prose that merely mentions
# "-----BEGIN RSA PRIVATE KEY-----" has no body and is not a match.
_PRIVATE_KEY = (
    PRIVATE_KEY_BEGIN
    + r"(?:\s|\\[rn]){1,8}(?:[A-Za-z0-9+/=]{16}|[A-Za-z][A-Za-z-]{1,30}:)"
    + r"(?s:.*?)(?:"
    + PRIVATE_KEY_END
    + r"|\z)"
)

# Placeholders people write where a password goes: not secrets.
_PLACEHOLDER_PASSWORDS = (
    r"(?i:pass|passwd|password|pwd|secret|changeme|change_?me|example|test|testing|"
    r"postgres|root|admin|guest|user|username|mysql|redis|mongo|foo|bar|baz|dummy|sample|"
    r"placeholder|redacted|(?:your|my)[_-]?pass(?:word)?|x+|\*+|\.+|_+|-+|%\([a-z_]+\)s)"
)
# A password inside a URL's userinfo: no whitespace, no URL delimiters, no
# template or variable syntax (${PASSWORD}, $PASS, {{ pw }}, <password>).
# (\s is ASCII in RE2: _SPACE adds the rest of what Python calls whitespace,
# which the stream redactor treats as token separators.)
_SPACE = r"\s\x0b\x1c-\x1f\x85\p{Z}"
_URL_USER = r"[^:@/" + _SPACE + r"?#\"'<>\[\]\\`]"
_URL_PASSWORD = r"([^@/" + _SPACE + r"?#\"'<>\[\]\\`${}]{3,})@"

_DB_SCHEMES = (
    r"(?i:postgres|postgresql|mysql|mariadb|mongodb|mongodb\+srv|redis|rediss|amqp|amqps|"
    r"mssql|sqlserver|cockroachdb|clickhouse|couchdb|neo4j|neo4j\+s)(?:\+[a-z0-9]+)?"
)
_URL_SCHEMES = r"(?i:https?|ftps?|sftp|smtps?|ldaps?|wss?|git|svn)"

_AWS_SECRET_NAME = r"(?i:aws[_-]?secret[_-]?(?:access[_-]?)?key|secret[_-]?access[_-]?key)"
_ASSIGN = r"(?:\\?[\"'])?[ \t]{0,8}(?:=>|:=|[:=])[ \t]{0,8}(?:\\?[\"'])?"


def _token(
    rule_id: str, kind: str, body: str, *, fixed: bool = False, ignore: str = ""
) -> SecretRule:
    """A prefixed token: ``LEFT (body) [RIGHT]``; ``fixed`` adds the right boundary."""
    pattern = LEFT + "(" + body + ")" + (RIGHT if fixed else "")
    return SecretRule(rule_id, kind, pattern, 1, ignore)


BUILTIN_RULES: tuple[SecretRule, ...] = (
    SecretRule("private-key", "private-key", _PRIVATE_KEY),
    # --- LLM providers ------------------------------------------------------
    _token("anthropic-api-key", "anthropic-key", r"sk-ant-(?:api|oat)[0-9]{2}-[A-Za-z0-9_-]{20,}"),
    _token("anthropic-admin-key", "anthropic-key", r"sk-ant-admin[0-9]{2}-[A-Za-z0-9_-]{20,}"),
    _token("openrouter-key", "openrouter-key", r"sk-or-v1-[0-9a-f]{64}", fixed=True),
    _token(
        "openai-project-key", "openai-key", r"sk-(?:proj|svcacct|admin|None)-[A-Za-z0-9_-]{40,}"
    ),
    # Any other sk- key (legacy OpenAI, DeepSeek, Moonshot...): somewhere a run
    # of 20 letters/digits, which a slug such as sk-learn-tutorial never has.
    _token("openai-key", "openai-key", r"sk-[A-Za-z0-9_-]*[A-Za-z0-9]{20}[A-Za-z0-9_-]*"),
    _token("groq-key", "groq-key", r"gsk_[A-Za-z0-9]{40,}", fixed=True),
    _token("xai-key", "xai-key", r"xai-[A-Za-z0-9]{70,}", fixed=True),
    _token("perplexity-key", "perplexity-key", r"pplx-[A-Za-z0-9]{40,}", fixed=True),
    _token("huggingface-token", "huggingface-token", r"hf_[A-Za-z0-9]{34,}", fixed=True),
    _token("replicate-token", "replicate-token", r"r8_[A-Za-z0-9]{37}", fixed=True),
    # --- clouds --------------------------------------------------------------
    _token("google-api-key", "google-api-key", r"AIza[0-9A-Za-z_-]{35}", fixed=True),
    _token("google-oauth-secret", "google-oauth-secret", r"GOCSPX-[A-Za-z0-9_-]{28}", fixed=True),
    _token("google-oauth-token", "google-oauth-token", r"ya29\.[0-9A-Za-z_-]{30,}"),
    _token(
        "aws-access-key-id",
        "aws-access-key-id",
        r"(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
        fixed=True,
        ignore=r"[A-Z]{4}X{16}",  # the documentation placeholder AKIAXXXXXXXXXXXXXXXX
    ),
    SecretRule(
        "aws-secret-key",
        "aws-secret-key",
        _AWS_SECRET_NAME + _ASSIGN + r"([A-Za-z0-9/+=]{40})(?:[^A-Za-z0-9/+=]|\z)",
        1,
        ignore=r"x{40}|X{40}|0{40}|\*{40}",
    ),
    SecretRule(
        "azure-storage-key",
        "azure-storage-key",
        r"(?i:AccountKey)=([A-Za-z0-9+/]{86}==)",
        1,
    ),
    _token("digitalocean-token", "digitalocean-token", r"do[opr]_v1_[a-f0-9]{64}", fixed=True),
    _token("databricks-token", "databricks-token", r"dapi[a-f0-9]{32}(?:-[0-9])?", fixed=True),
    # --- code hosting and packages --------------------------------------------
    _token(
        "github-token",
        "github-token",
        r"gh[pousr]_[A-Za-z0-9]{36,255}",
        fixed=True,
        ignore=r"gh[pousr]_(?:x+|X+)",  # ghp_xxxxxxxx... placeholders
    ),
    _token(
        "github-fine-grained-pat", "github-token", r"github_pat_[A-Za-z0-9_]{60,255}", fixed=True
    ),
    _token("gitlab-token", "gitlab-token", r"gl(?:pat|dt|rt|ptt|soat)-[A-Za-z0-9_-]{20,}"),
    _token("npm-token", "npm-token", r"npm_[A-Za-z0-9]{36}", fixed=True),
    _token("pypi-token", "pypi-token", r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"),
    _token("docker-hub-token", "docker-hub-token", r"dckr_pat_[A-Za-z0-9_-]{27,}"),
    _token("atlassian-token", "atlassian-token", r"ATATT3[A-Za-z0-9_=-]{100,}"),
    _token("linear-key", "linear-key", r"lin_api_[A-Za-z0-9]{40}", fixed=True),
    _token(
        "notion-token",
        "notion-token",
        r"(?:ntn_[0-9]{11}[A-Za-z0-9]{35}|secret_[A-Za-z0-9]{43})",
        fixed=True,
    ),
    _token("postman-key", "postman-key", r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}", fixed=True),
    # --- messaging and payments ------------------------------------------------
    _token("slack-token", "slack-token", r"xox[abposre]-[0-9]{1,16}-[A-Za-z0-9-]{10,}"),
    _token("slack-app-token", "slack-token", r"xapp-[0-9]-[A-Z0-9]{8,}-[0-9]{6,}-[A-Za-z0-9]{20,}"),
    SecretRule(
        "slack-webhook",
        "slack-webhook",
        r"hooks\.slack\.com/(?:services|workflows|triggers)/([TE][A-Z0-9]{6,}/[A-Z0-9]{6,}/[A-Za-z0-9]{20,})",
        1,
    ),
    _token("stripe-key", "stripe-key", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}"),
    _token("stripe-webhook-secret", "stripe-webhook-secret", r"whsec_[A-Za-z0-9]{24,}"),
    _token("sendgrid-key", "sendgrid-key", r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}", fixed=True),
    _token("twilio-key", "twilio-key", r"SK[0-9a-f]{32}", fixed=True),
    SecretRule(
        "telegram-bot-token",
        "telegram-bot-token",
        # also right after "bot", as in https://api.telegram.org/bot<token>/getMe
        r"(?:\A|\\[nrt]|[^A-Za-z0-9_]|bot)([0-9]{8,10}:AA[0-9A-Za-z_-]{33})" + RIGHT,
        1,
    ),
    # --- generic shapes with unambiguous structure -------------------------------
    _token("jwt", "jwt", r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{16,}"),
    SecretRule(
        "bearer-token",
        "bearer-token",
        r"(?i:authorization)" + _ASSIGN + r"(?i:bearer)[ \t]{1,8}([A-Za-z0-9._~+/-]{20,}=*)",
        1,
        # a token with no digit is a placeholder (YOUR_ACCESS_TOKEN_HERE)
        ignore=r"[^0-9]*",
    ),
    SecretRule(
        "connection-password",
        "connection-password",
        LEFT + _DB_SCHEMES + "://" + _URL_USER + "*:" + _URL_PASSWORD,
        1,
        ignore=_PLACEHOLDER_PASSWORDS,
    ),
    SecretRule(
        "jdbc-password",
        "connection-password",
        r"(?i:jdbc:[a-z0-9]+:)[^\s\"'<>]*?[?&;](?i:password)=([^&;"
        + _SPACE
        + r"\"'<>\\`${}\[\]]{3,})",
        1,
        ignore=_PLACEHOLDER_PASSWORDS,
    ),
    SecretRule(
        "url-password",
        "url-password",
        LEFT + _URL_SCHEMES + "://" + _URL_USER + "+:" + _URL_PASSWORD,
        1,
        ignore=_PLACEHOLDER_PASSWORDS,
    ),
)

#: Every built-in secret that begins like a word (ASCII letters, at most the
#: first one upper case) begins with one of these: a word such as ``sk``, ``ey``
#: or ``A`` at the end of a streamed chunk may still become ``sk-proj-...``,
#: ``eyJ...`` or ``AKIA...``, so the stream redactor holds it. Any other word
#: cannot start a secret and goes out at once. ``tests/safety`` checks every
#: positive sample against this list.
WORD_STARTS: tuple[str, ...] = (
    "sk", "rk", "gsk", "xai", "pplx", "hf", "r", "ya", "dop", "dor", "doo", "dapi",
    "ghp", "gho", "ghu", "ghs", "ghr", "github", "glpat", "gldt", "glrt", "glptt", "glsoat",
    "npm", "pypi", "dckr", "lin", "ntn", "secret", "xoxa", "xoxb", "xoxp", "xoxo", "xoxs",
    "xoxr", "xoxe", "xapp", "hooks", "whsec", "ey", "bot", "aws", "jdbc", "authorization",
    "accountkey", "postgres", "postgresql", "mysql", "mariadb", "mongodb", "redis", "rediss",
    "amqp", "amqps", "mssql", "sqlserver", "cockroachdb", "clickhouse", "couchdb", "neo",
    "http", "https", "ftp", "ftps", "sftp", "smtp", "smtps", "ldap", "ldaps", "ws", "wss",
    "git", "svn",
    # upper-case starts: only their first letter can look like a word
    "A", "Account", "Authorization", "Bearer", "G", "P", "S", "D",
)  # fmt: skip
