"""The backend catalog's data: quirks and options (end to end: tests/e2e/test_catalog.py)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from backends import CATALOG, RequestQuirks
from extproc.config.model import Config
from extproc.processing.app import build_backends


@pytest.mark.parametrize(
    ("given", "expected"),
    [(-1, 0.01), (0, 0.01), (0.5, 0.5), (1, 1.0), (1.7, 1.0)],
)
def test_an_exclusive_low_bound_is_never_sent(given: float, expected: float) -> None:
    body: dict[str, Any] = {"temperature": given}
    RequestQuirks(temperature=(0.0, 1.0), low_exclusive=True).apply(body)
    assert body["temperature"] == pytest.approx(expected)


def test_temperature_is_left_alone_when_absent_or_in_range() -> None:
    quirks = RequestQuirks(temperature=(0.0, 1.0))
    body: dict[str, Any] = {"model": "m"}
    quirks.apply(body)
    assert body == {"model": "m"}
    body = {"temperature": 0.0}
    quirks.apply(body)
    assert body == {"temperature": 0.0}


def test_allowed_fields_drop_the_rest() -> None:
    body: dict[str, Any] = {"model": "m", "messages": [], "seed": 1, "stream_options": {}}
    RequestQuirks(allowed_fields=frozenset({"model", "messages"})).apply(body)
    assert body == {"model": "m", "messages": []}


def test_non_stream_defaults_only_fill_gaps_of_non_streaming_requests() -> None:
    quirks = RequestQuirks(non_stream_defaults={"enable_thinking": False})
    body: dict[str, Any] = {"model": "m"}
    quirks.apply(body)
    assert body["enable_thinking"] is False
    body = {"model": "m", "enable_thinking": True}
    quirks.apply(body)
    assert body["enable_thinking"] is True  # the client's choice
    body = {"model": "m", "stream": True}
    quirks.apply(body)
    assert "enable_thinking" not in body


def test_empty_quirks_are_false() -> None:
    assert not RequestQuirks()
    assert CATALOG["minimax"].quirks
    assert not CATALOG["openai"].quirks


def test_every_type_has_a_default_base_url_except_the_generic_one() -> None:
    missing = [name for name, t in CATALOG.items() if t.default_base_url is None]
    assert missing == ["openai-compatible"]


def config(backend: dict[str, Any]) -> Config:
    return Config.model_validate({"backends": {"openrouter": backend}})


def test_options_become_the_types_headers() -> None:
    cfg = config(
        {
            "api_key": "sk-fake-or",
            "options": {"referer": "https://example.test", "title": "T"},
            "headers": {"X-Title": "explicit headers win"},
        }
    )
    headers = build_backends(cfg)["openrouter"].headers
    assert headers["http-referer"] == "https://example.test"
    assert headers["x-openrouter-title"] == "T"
    assert headers["x-title"] == "explicit headers win"
    assert headers["authorization"] == "Bearer sk-fake-or"


def test_an_unknown_option_is_refused_with_the_types_options() -> None:
    with pytest.raises(ValidationError, match=r"has no option 'version'.*categories, referer"):
        config({"options": {"version": "2023-06-01"}})


def test_an_option_cannot_inject_a_header_line() -> None:
    with pytest.raises(ValidationError, match="line break"):
        config({"options": {"title": "x\r\nx-evil: 1"}})


def test_anthropic_version_option_replaces_the_default() -> None:
    cfg = Config.model_validate({"backends": {"anthropic": {"options": {"version": "2026-10-21"}}}})
    assert build_backends(cfg)["anthropic"].headers["anthropic-version"] == "2026-10-21"
