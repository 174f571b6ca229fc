"""Backend types known to the proxy.

Each entry is plain data. Adding a provider means adding an entry here (and,
for a new wire schema, a codec in :mod:`extproc.codecs`), not a subclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key", "none"]
AUTH_STYLES: tuple[AuthStyle, ...] = ("bearer", "x-api-key", "x-goog-api-key", "none")

#: Wire schemas a backend can speak (each has a codec in extproc.codecs).
SCHEMAS: tuple[str, ...] = ("openai-chat", "openai-responses", "anthropic", "gemini")


@dataclass(frozen=True)
class BackendType:
    """A provider family: defaults and quirks shared by all its instances."""

    name: str
    schema: str
    default_base_url: str | None
    auth: AuthStyle = "bearer"
    #: Path (relative to the base URL's path) that answers GET without a
    #: key; active health checks accept any status below 500 from it.
    health_path: str = "/models"
    #: Headers every request to this provider carries (config may add more).
    default_headers: dict[str, str] = field(default_factory=dict)
    #: The field OpenAI-compatible servers read for the output limit.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    description: str = ""


CATALOG: dict[str, BackendType] = {
    t.name: t
    for t in (
        BackendType(
            name="openai",
            schema="openai-chat",
            default_base_url="https://api.openai.com/v1",
            max_tokens_field="max_completion_tokens",
            description="OpenAI, or any OpenAI-compatible API given a base_url.",
        ),
        BackendType(
            name="openai-compatible",
            schema="openai-chat",
            default_base_url=None,
            description="Any server speaking OpenAI Chat Completions (vLLM, llama.cpp, ...).",
        ),
        BackendType(
            name="openai-responses",
            schema="openai-responses",
            default_base_url="https://api.openai.com/v1",
            max_tokens_field="max_completion_tokens",
            description="OpenAI's Responses API (POST /v1/responses).",
        ),
        BackendType(
            name="anthropic",
            schema="anthropic",
            default_base_url="https://api.anthropic.com/v1",
            auth="x-api-key",
            default_headers={"anthropic-version": "2023-06-01"},
            description="Anthropic Messages API (POST /v1/messages).",
        ),
        BackendType(
            name="gemini",
            schema="gemini",
            default_base_url="https://generativelanguage.googleapis.com/v1beta",
            auth="x-goog-api-key",
            description="Google Gemini API (generateContent / streamGenerateContent).",
        ),
    )
}


def get_type(name: str) -> BackendType:
    """Return the catalog entry for ``name`` or raise ``KeyError``."""
    return CATALOG[name]
