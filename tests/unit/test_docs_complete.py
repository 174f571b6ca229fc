"""The docs name every CLI flag, command and config key the code has."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from pydantic import BaseModel

from extproc.cli import build_parser
from extproc.config import Config
from extproc.config.env import IGNORED

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CONFIGURATION = (DOCS / "configuration.md").read_text()
README = (ROOT / "README.md").read_text()
ALL_DOCS = "\n".join(path.read_text() for path in sorted(DOCS.glob("*.md")))


def readme_synopsis() -> str:
    """The README's "Command line" section."""
    start = README.index("## Command line")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def flags() -> list[str]:
    return sorted(
        option
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    )


def mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models a field holds (directly, in a list, or as a map's values)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType, list, dict):
        args = get_args(annotation)[1:] if origin is dict else get_args(annotation)
        return [model for arg in args for model in _models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def config_keys(model: type[BaseModel] = Config, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Dotted paths of every field; a map's own keys (instance names...) become ``<name>``."""
    for name, info in model.model_fields.items():
        path = (*prefix, info.alias or name)
        yield ".".join(path)
        below = (*path, "<name>") if get_origin(info.annotation) is dict else path
        for inner in _models_in(info.annotation):
            yield from config_keys(inner, below)


def documented(key: str) -> bool:
    """The dotted path, the leaf in backticks, or the leaf as a YAML key in an example."""
    leaf = key.rsplit(".", 1)[-1]
    plain = key.replace(".<name>", "")
    return (
        f"`{leaf}`" in ALL_DOCS
        or plain in ALL_DOCS
        or re.search(rf"(?<![\w-]){re.escape(leaf)}:", ALL_DOCS) is not None
    )


@pytest.mark.parametrize("flag", flags())
def test_every_flag_is_in_configuration_md(flag: str) -> None:
    assert mentions(CONFIGURATION, flag), f"{flag} is not in docs/configuration.md"


@pytest.mark.parametrize("flag", flags())
def test_every_flag_is_in_the_readme_synopsis(flag: str) -> None:
    assert mentions(readme_synopsis(), flag), f"{flag} is not in README's Command line"


@pytest.mark.parametrize(
    "command",
    ["envoy-config", "config check", "config show", "capture", "key-id", "hash-key", "[serve]"],
)
def test_every_command_is_in_the_readme_synopsis(command: str) -> None:
    assert f"python -m extproc {command}" in readme_synopsis()


def test_config_keys_are_walked() -> None:
    keys = set(config_keys())
    assert {"port", "routing.static_route", "backends.<name>.api_key"} <= keys
    assert "backends.<name>.health_check.interval" in keys
    assert "redaction.patterns.group" in keys  # models inside lists too


def test_every_config_key_is_documented() -> None:
    missing = [key for key in config_keys() if not documented(key)]
    assert not missing, f"config keys no docs/*.md mentions: {missing}"


def test_environment_names_are_documented() -> None:
    assert (
        "LLM_PROXY_<SECTION>__<KEY>" in ALL_DOCS or "LLM_PROXY_SESSIONS__ENABLED" in CONFIGURATION
    )
    for name in IGNORED:
        assert name in CONFIGURATION, f"{name} (not a config key) is not in configuration.md"
