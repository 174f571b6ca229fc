"""Backend types known to the proxy.

Each entry is plain data. Adding a provider means adding an entry here (and,
for a new wire schema, a codec in :mod:`extproc.codecs`), not a subclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

AuthStyle = Literal["bearer", "x-api-key", "x-goog-api-key", "none"]
AUTH_STYLES: tuple[AuthStyle, ...] = ("bearer", "x-api-key", "x-goog-api-key", "none")

#: Wire schemas a backend can speak (each has a codec in extproc.codecs).
SCHEMAS: tuple[str, ...] = ("openai-chat", "openai-responses", "anthropic", "gemini")

#: Where the local model server the proxy can start (``local_model:``) listens by
#: default; the ``local`` type's base URL follows ``local_model.port``.
LOCAL_MODEL_PORT = 8091


@dataclass(frozen=True)
class RequestQuirks:
    """What a provider's API takes differently from the schema it speaks.

    Applied to the encoded request body (a dict) on its way to an instance of
    the type, whatever protocol the client spoke.
    """

    #: ``temperature`` is clamped into ``[low, high]``; ``low_exclusive``: the
    #: API rejects ``low`` itself, so it becomes ``low + 0.01``.
    temperature: tuple[float, float] | None = None
    low_exclusive: bool = False
    #: Top-level fields the API accepts; any other is dropped (None: all).
    allowed_fields: frozenset[str] | None = None
    #: Fields set on non-streaming requests unless the request has them.
    non_stream_defaults: Mapping[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.temperature is not None
            or self.allowed_fields is not None
            or self.non_stream_defaults
        )

    def apply(self, body: dict[str, Any]) -> None:
        """Adjust ``body`` in place."""
        if self.allowed_fields is not None:
            for name in [k for k in body if k not in self.allowed_fields]:
                del body[name]
        if self.temperature is not None and isinstance(body.get("temperature"), int | float):
            low, high = self.temperature
            value = min(max(float(body["temperature"]), low), high)
            if self.low_exclusive and value <= low:
                value = low + 0.01
            body["temperature"] = value
        if not body.get("stream"):
            for name, value in self.non_stream_defaults.items():
                body.setdefault(name, value)


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
    #: Config ``options`` this type takes, and the headers each one sets.
    options: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    quirks: RequestQuirks = field(default_factory=RequestQuirks)
    #: False: an instance answers without a key (a server on this machine), so
    #: a key-less instance still counts as configured (``default_backend: a|b``).
    key_required: bool = True
    description: str = ""


_ANTHROPIC_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "version": ("anthropic-version",),
    "beta": ("anthropic-beta",),
}

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
            name="local",
            schema="openai-chat",
            default_base_url=f"http://127.0.0.1:{LOCAL_MODEL_PORT}/v1",
            key_required=False,
            description=(
                "The local model server the proxy starts itself (local_model: in the config), "
                "llama-cpp-python with the bundled SmolLM2 by default; no key, no network."
            ),
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
            options=_ANTHROPIC_OPTIONS,
            description="Anthropic Messages API (POST /v1/messages).",
        ),
        BackendType(
            name="gemini",
            schema="gemini",
            default_base_url="https://generativelanguage.googleapis.com/v1beta",
            auth="x-goog-api-key",
            description="Google Gemini API (generateContent / streamGenerateContent).",
        ),
        BackendType(
            name="openrouter",
            schema="openai-chat",
            default_base_url="https://openrouter.ai/api/v1",
            options={
                "referer": ("http-referer",),
                # X-Title is the older name; OpenRouter reads either.
                "title": ("x-openrouter-title", "x-title"),
                "categories": ("x-openrouter-categories",),
            },
            description=(
                "OpenRouter: many providers' models as vendor/model. Streams carry "
                "': OPENROUTER PROCESSING' comment lines (skipped)."
            ),
        ),
        BackendType(
            name="zai",
            schema="openai-chat",
            default_base_url="https://api.z.ai/api/paas/v4",
            quirks=RequestQuirks(temperature=(0.0, 1.0)),
            description="Z.AI / Zhipu GLM. temperature is 0..1 (clamped).",
        ),
        BackendType(
            name="qwen",
            schema="openai-chat",
            default_base_url="https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            # Hybrid-thinking Qwen3 models answer 400 to a non-streaming request
            # unless thinking is off.
            quirks=RequestQuirks(non_stream_defaults={"enable_thinking": False}),
            description="Alibaba Cloud Model Studio (DashScope), OpenAI-compatible mode.",
        ),
        BackendType(
            name="minimax",
            schema="openai-chat",
            default_base_url="https://api.minimax.io/v1",
            quirks=RequestQuirks(temperature=(0.0, 1.0), low_exclusive=True),
            description="MiniMax. temperature is (0, 1]: 0 becomes 0.01, above 1 becomes 1.",
        ),
        BackendType(
            name="internlm",
            schema="openai-chat",
            default_base_url="https://chat.intern-ai.org.cn/api/v1",
            quirks=RequestQuirks(
                allowed_fields=frozenset(
                    {
                        "model",
                        "messages",
                        "n",
                        "temperature",
                        "top_p",
                        "stream",
                        "max_tokens",
                        "tools",
                        "thinking_mode",
                    }
                )
            ),
            description=(
                "Shanghai AI Lab Intern (InternLM / Intern-S1). Takes only model, messages, n, "
                "temperature, top_p, stream, max_tokens, tools (and thinking_mode): the rest "
                "is dropped."
            ),
        ),
        BackendType(
            name="zenmux",
            schema="openai-chat",
            default_base_url="https://zenmux.ai/api/v1",
            max_tokens_field="max_completion_tokens",
            description="ZenMux: many providers' models as vendor/model.",
        ),
        BackendType(
            name="kimi",
            schema="openai-chat",
            default_base_url="https://api.moonshot.ai/v1",
            quirks=RequestQuirks(temperature=(0.0, 1.0)),
            description="Moonshot AI (Kimi) open platform. temperature is 0..1 (clamped).",
        ),
        BackendType(
            name="kimi-code",
            schema="openai-chat",
            default_base_url="https://api.kimi.com/coding/v1",
            options={"user_agent": ("user-agent",)},
            description=(
                "Kimi Code (Kimi For Coding subscription). Answers 403 unless the User-Agent "
                "is a coding agent's: the client's passes through, or set the user_agent option."
            ),
        ),
    )
}


def get_type(name: str) -> BackendType:
    """Return the catalog entry for ``name`` or raise ``KeyError``."""
    return CATALOG[name]
