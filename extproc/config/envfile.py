"""The optional ``.env`` file: ``NAME=value`` lines read with python-dotenv.

``--env-file PATH`` names it; without the flag, ``.env`` in the current
directory is read when it exists. Its values never override variables
already in the environment, are visible to ``${NAME}`` references in the
config file and to ``LLM_PROXY_*`` names, and are never logged or printed.
"""

from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values

from extproc.errors import ConfigError

__all__ = ["DEFAULT_ENV_FILE", "read_env_file"]

DEFAULT_ENV_FILE = Path(".env")


def read_env_file(path: Path | None) -> tuple[Path | None, dict[str, str]]:
    """The file read (``None``: none) and its variables.

    ``path`` None: ``.env`` in the current directory if it exists. A path
    given explicitly must exist.
    """
    if path is None:
        if not DEFAULT_ENV_FILE.is_file():
            return None, {}
        path = DEFAULT_ENV_FILE
    elif not path.is_file():
        raise ConfigError(f"env file {path} does not exist (--env-file)")
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read env file {path}: {exc.__class__.__name__}") from None
    # A bare ``NAME`` line (no '=') has no value: it sets nothing.
    return path, {name: value for name, value in values.items() if value is not None}
