"""What the text-call engines return."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextCall:
    """One tool call found in text: a declared tool and its arguments."""

    #: The declared tool's name (a near-miss spelling is resolved to it).
    name: str
    #: The arguments as compact JSON text (always a JSON object).
    arguments: str
    #: How the model wrote it: ``json_fence``, ``json``, ``xml_tool``,
    #: ``function_calls``, ``tool_call_line``, ``hermes``, ``python_tag``,
    #: ``mistral`` or ``deepseek`` (for metrics and logs).
    format: str


@dataclass(frozen=True, slots=True)
class TextCalls:
    """The calls a text holds and the prose left around them."""

    calls: tuple[TextCall, ...]
    #: The prose before, between and after the calls: each piece stripped,
    #: empty pieces dropped, joined with a blank line ("" when none).
    text: str
