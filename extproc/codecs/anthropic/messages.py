"""Canonical messages -> Anthropic ``system`` and alternating ``messages``.

* System prompt: for the same protocol, the leading ``system`` message(s) become ``system``
  again (a string when it was one, else text blocks with their ``cache_control``); a later
  ``system`` message stays in place as a ``system``-role message. For another protocol every
  ``system`` and ``developer`` message, wherever it is, is hoisted: their texts joined, in
  order, with a blank line into a string ``system``.
* ``tool`` messages become ``user`` turns of ``tool_result`` blocks (``content`` a string when
  the result was ``plain``, else text/image blocks; ``is_error: true`` when set; ids
  sanitised). The canonical message's ``extra`` carries the block's other fields for the
  same protocol.
* Consecutive turns of the same role are merged (Anthropic combines them anyway, and
  tool results must sit in the one user turn after the calls). In a merged user turn every
  ``tool_result`` block comes first, then the other blocks, each group in order.
* A turn keeps the string form only when it is one ``plain`` message of text.
* For another protocol, empty text blocks are dropped and a message left with nothing to say
  is skipped (the API rejects empty content); images, ``tool_use`` and signed Anthropic
  reasoning are kept, other reasoning and other protocols' opaque parts are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from extproc.canonical import (
    ImagePart,
    Message,
    OpaquePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from extproc.codecs.anthropic.blocks import (
    image_block,
    request_reasoning,
    text_block,
    tool_use_block,
)
from extproc.codecs.anthropic.common import PROTOCOL, tool_id

System = str | list[dict[str, Any]] | None


@dataclass
class _Turn:
    role: str
    results: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    #: The string form, while the turn is one plain text message.
    text: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: _Turn) -> None:
        self.results += other.results
        self.blocks += other.blocks
        self.text = None
        for key, value in other.extra.items():
            self.extra.setdefault(key, value)

    def wire(self) -> dict[str, Any]:
        content: Any = self.text if self.text is not None else self.results + self.blocks
        message: dict[str, Any] = {"role": self.role, "content": content}
        for key, value in self.extra.items():
            message.setdefault(key, value)
        return message


def encode_messages(messages: list[Message], same: bool) -> tuple[System, list[dict[str, Any]]]:
    """The ``system`` value (None: none) and the ``messages`` array for ``messages``."""
    system: list[Message] = []
    turns: list[_Turn] = []
    for message in messages:
        if message.role in ("system", "developer"):
            if same and turns:
                turns.append(_turn(message, "system", same))
            else:
                system.append(message)
            continue
        role = "assistant" if message.role == "assistant" else "user"
        turn = _turn(message, role, same)
        if not same and turn.text is None and not turn.results and not turn.blocks:
            continue  # nothing Anthropic would accept
        if turns and turns[-1].role == role:
            turns[-1].merge(turn)
        else:
            turns.append(turn)
    return _system(system, same), [turn.wire() for turn in turns]


def _turn(message: Message, role: str, same: bool) -> _Turn:
    turn = _Turn(role)
    texts: list[str] = []
    for part in message.content:
        if isinstance(part, ToolResultPart):
            turn.results.append(_result_block(part, message, same))
            continue
        if isinstance(part, TextPart):
            texts.append(part.text)
        block = _block(part, same)
        if block is not None:
            turn.blocks.append(block)
    only_text = all(isinstance(p, TextPart) for p in message.content)
    if message.plain and only_text and not turn.results and (same or "".join(texts)):
        turn.text = "".join(texts)
    if same and message.extra and message.role != "tool":
        turn.extra = dict(message.extra)
    return turn


def _block(part: Part, same: bool) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return text_block(part, same) if same or part.text else None
    if isinstance(part, ImagePart):
        return image_block(part, same)
    if isinstance(part, ToolCallPart):
        return tool_use_block(part, same)
    if isinstance(part, ReasoningPart):
        return request_reasoning(part, same)
    if isinstance(part, OpaquePart) and part.protocol == PROTOCOL and isinstance(part.data, dict):
        return part.data
    return None


def _result_block(part: ToolResultPart, message: Message, same: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id(part.tool_call_id)}
    if message.plain and all(isinstance(p, TextPart) for p in part.content):
        block["content"] = "".join(p.text for p in part.content if isinstance(p, TextPart))
    else:
        content = (_block(p, same) for p in part.content)
        block["content"] = [b for b in content if b is not None]
    if part.is_error:
        block["is_error"] = True
    if same and message.role == "tool" and message.extra and len(message.content) == 1:
        for key, value in message.extra.items():
            if key != "content":
                block.setdefault(key, value)
            elif value is None:
                del block["content"]
            else:
                block["content"] = value
    return block


def _system(messages: list[Message], same: bool) -> System:
    if not messages:
        return None
    parts = [p for m in messages for p in m.content if isinstance(p, TextPart)]
    if not same:
        return "\n\n".join(p.text for p in parts if p.text) or None
    if len(messages) == 1 and messages[0].plain:
        return "".join(p.text for p in parts)
    return [text_block(p, same) for p in parts]
