"""Gemini ``Part`` objects <-> canonical parts, for requests and answers alike.

Decoding (one Gemini part -> one canonical part):

* ``text`` -> :class:`TextPart`; with ``thought: true`` -> :class:`ReasoningPart`
  (``provider="gemini"``, its ``thoughtSignature`` as ``signature``). An empty text
  part that only carries a ``thoughtSignature`` (streams end with one) is a
  replay token, not text: a :class:`ReasoningPart` too, marked
  ``extra["thought"] = False`` so that it goes back to Gemini as it came (and
  never reaches another provider as an empty text block).
* ``inlineData`` of an ``image/*`` type -> :class:`ImagePart` (base64 ``data``);
  ``fileData`` of an ``image/*`` type -> :class:`ImagePart` (``url`` = ``fileUri``,
  marked by a ``fileData`` key in ``extra``); other media -> :class:`OpaquePart`.
* ``functionCall`` -> :class:`ToolCallPart`: its ``id`` when given, else the id
  the caller supplies (requests: ``call_<content>_<part>``; answers:
  ``call_<responseId>_<n>``); ``args`` as compact JSON text (absent -> ``{}``).
* ``functionResponse`` -> :class:`ToolResultPart` with the call's ``name``; the
  ``response`` object rendered as text: ``{"output": "s"}`` -> ``s``,
  ``{"output": x}`` -> JSON of ``x``, ``{"error": e}`` -> ``e`` with ``is_error``,
  any other object -> its JSON. The pairing id is left to the caller when the
  part has no ``id``.
* Anything else (``executableCode``, ``codeExecutionResult``, a bare
  ``thoughtSignature``...) -> :class:`OpaquePart`, sent again only to Gemini.

A part's other fields (``thoughtSignature`` on non-thought parts,
``videoMetadata``, ``partMetadata``...) go to the canonical part's ``extra``
(keys in lowerCamelCase), and unknown fields of the data object under the
data field's name (``extra["functionCall"]``, ``extra["fileData"]``...). A
function response keeps its original ``response`` object in the rendered
text part's ``extra["response"]`` (:class:`ToolResultPart` has no ``extra``):
the same-protocol encoder sends it back only while the text still renders
from it, so a stage that rewrote the text is never undone.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from extproc.canonical import (
    ImagePart,
    OpaquePart,
    Part,
    ReasoningPart,
    TextPart,
    ToolCallPart,
    ToolResultPart,
)
from extproc.codecs.gemini.wire import PROTOCOL, args_object, args_text, camel, dumps, get, names
from extproc.errors import InvalidRequest

#: Fields of a part with a canonical home (``thoughtSignature`` travels in ``extra``).
PART_FIELDS = names("text", "thought", "inlineData", "fileData", "functionCall", "functionResponse")
#: ``extra`` keys that are not part-level fields to copy (data-object fields, markers).
_NESTED = frozenset(
    {"inlineData", "fileData", "functionCall", "functionResponse", "response", "thought"}
)
_CALL_FIELDS = names("name", "args")
_RESPONSE_FIELDS = names("name", "response")
_INLINE_FIELDS = names("mimeType", "data")
_FILE_FIELDS = names("mimeType", "fileUri")
#: The Gemini Files API: URIs a Gemini backend fetches itself.
FILES_API = "https://generativelanguage.googleapis.com/"
_SIGNATURES = {"/9j/": "image/jpeg", "iVBORw0KGgo": "image/png", "R0lGOD": "image/gif"}


# -- decoding --------------------------------------------------------------------------------


def decode_part(part: dict[str, Any], where: str, call_id: str) -> Part:
    """One Gemini part as a canonical part (see the module docstring).

    Raises :class:`InvalidRequest` (``param`` = ``where``...) for a function call
    without a name, ``args`` or ``response`` that are not objects.
    """
    extra = {camel(k): v for k, v in part.items() if k not in PART_FIELDS}
    text = get(part, "text")
    if isinstance(text, str):
        thought = get(part, "thought") is True
        signature = extra.get("thoughtSignature")
        if thought or (not text and isinstance(signature, str)):
            extra.pop("thoughtSignature", None)
            if not thought:
                extra["thought"] = False  # a bare signature carrier, sent back as it came
            return ReasoningPart(
                text=text,
                signature=signature if isinstance(signature, str) else None,
                provider=PROTOCOL,
                extra=extra or None,
            )
        return TextPart(text=text, extra=extra or None)
    call = get(part, "functionCall")
    if call is not None:
        return _decode_call(call, f"{where}.functionCall", call_id, extra)
    response = get(part, "functionResponse")
    if response is not None:
        return _decode_result(response, f"{where}.functionResponse", extra)
    for field, uri_field, fields in (
        ("inlineData", "data", _INLINE_FIELDS),
        ("fileData", "fileUri", _FILE_FIELDS),
    ):
        media = get(part, field)
        if not isinstance(media, dict):
            continue
        mime = get(media, "mimeType")
        value = get(media, uri_field)
        if isinstance(mime, str) and mime.startswith("image/") and isinstance(value, str):
            nested = {k: v for k, v in media.items() if k not in fields}
            if nested or field == "fileData":
                extra[field] = nested  # for fileData also the marker of its origin
            if field == "inlineData":
                return ImagePart(data=value, media_type=mime, extra=extra or None)
            return ImagePart(url=value, media_type=mime, extra=extra)
    return OpaquePart(protocol=PROTOCOL, data=part)


def _decode_call(call: Any, where: str, call_id: str, extra: dict[str, Any]) -> ToolCallPart:
    if not isinstance(call, dict) or not isinstance(get(call, "name"), str):
        raise InvalidRequest(f"{where}.name must be a string", param=f"{where}.name")
    args = get(call, "args")
    if args is not None and not isinstance(args, dict):
        raise InvalidRequest(f"{where}.args must be an object", param=f"{where}.args")
    given = get(call, "id")
    nested = {k: v for k, v in call.items() if k not in _CALL_FIELDS}
    if nested:
        extra["functionCall"] = nested
    return ToolCallPart(
        id=given if isinstance(given, str) and given else call_id,
        name=get(call, "name"),
        arguments=args_text(args),
        extra=extra or None,
    )


def _decode_result(result: Any, where: str, extra: dict[str, Any]) -> ToolResultPart:
    if not isinstance(result, dict) or not isinstance(get(result, "name"), str):
        raise InvalidRequest(f"{where}.name must be a string", param=f"{where}.name")
    response = get(result, "response")
    if not isinstance(response, dict):
        raise InvalidRequest(
            f'{where}.response must be a JSON object (e.g. {{"output": ...}})',
            param=f"{where}.response",
        )
    text, is_error = render_response(response)
    nested = {k: v for k, v in result.items() if k not in _RESPONSE_FIELDS}
    extra["response"] = response
    if nested:
        extra["functionResponse"] = nested
    given = get(result, "id")
    return ToolResultPart(
        tool_call_id=given if isinstance(given, str) else "",
        content=[TextPart(text=text, extra=extra)],
        is_error=is_error,
        name=get(result, "name"),
    )


def render_response(response: dict[str, Any]) -> tuple[str, bool]:
    """A ``functionResponse.response`` object as result text, and whether it is an error."""
    if len(response) == 1:
        key, value = next(iter(response.items()))
        if key in ("output", "error"):
            return (value if isinstance(value, str) else dumps(value)), key == "error"
    return dumps(response), "error" in response and "output" not in response


# -- encoding --------------------------------------------------------------------------------


def part_extras(extra: dict[str, Any] | None, keep: frozenset[str] | None) -> dict[str, Any]:
    """Part-level ``extra`` fields to emit: all (``keep`` None) or only ``keep``."""
    if not extra:
        return {}
    return {k: v for k, v in extra.items() if k not in _NESTED and (keep is None or k in keep)}


def text_out(part: TextPart, keep: frozenset[str] | None) -> dict[str, Any]:
    return {"text": part.text, **part_extras(part.extra, keep)}


def thought_out(
    part: ReasoningPart, keep: frozenset[str] | None, *, signed: bool
) -> dict[str, Any]:
    """Gemini reasoning as a ``thought: true`` part (a bare signature carrier as it came);
    the signature only when ``signed``."""
    out: dict[str, Any] = {"text": part.text}
    if (part.extra or {}).get("thought") is not False:
        out["thought"] = True
    if signed and part.signature is not None:
        out["thoughtSignature"] = part.signature
    out.update(part_extras(part.extra, keep))
    return out


def call_out(part: ToolCallPart, keep: frozenset[str] | None, *, with_id: bool) -> dict[str, Any]:
    """A tool call as a ``functionCall`` part; ``keep`` None = same protocol (all extras)."""
    call: dict[str, Any] = {"name": part.name, "args": args_object(part.arguments)}
    if with_id and part.id:
        call["id"] = part.id
    if keep is None and part.extra and isinstance(part.extra.get("functionCall"), dict):
        call.update(part.extra["functionCall"])
    return {"functionCall": call, **part_extras(part.extra, keep)}


def result_response(part: ToolResultPart, same: bool) -> dict[str, Any]:
    """The ``functionResponse.response`` object for a tool result.

    Same protocol: the client's own object while the text still renders from
    it. Otherwise ``{"output": text}``, or ``{"error": text}`` for an error.
    """
    texts = [p for p in part.content if isinstance(p, TextPart)]
    text = "\n".join(p.text for p in texts)
    if same and len(texts) == 1 and texts[0].extra:
        original = texts[0].extra.get("response")
        if isinstance(original, dict) and render_response(original) == (text, part.is_error):
            return original
    return {"error" if part.is_error else "output": text}


def result_extras(part: ToolResultPart, same: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(functionResponse fields, part-level fields) kept from a Gemini client."""
    first = next((p for p in part.content if isinstance(p, TextPart)), None)
    if not same or first is None or not first.extra:
        return {}, {}
    nested = first.extra.get("functionResponse")
    return (nested if isinstance(nested, dict) else {}), part_extras(first.extra, None)


def image_out(part: ImagePart, keep: frozenset[str] | None, where: str) -> dict[str, Any]:
    """An image as ``inlineData`` (base64 or ``data:`` URL) or ``fileData``.

    ``http(s)`` URLs are a 400 (a Gemini backend fetches no web URLs), except
    Files API URIs and, for the same protocol, images the client sent as
    ``fileData``.
    """
    extras = part_extras(part.extra, keep)
    nested = (part.extra or {}) if keep is None else {}
    if part.data is not None:
        inline = {"mimeType": part.media_type or sniff(part.data), "data": part.data}
        return {"inlineData": {**inline, **(nested.get("inlineData") or {})}, **extras}
    url = part.url or ""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise InvalidRequest("image data URLs must be base64-encoded", param=where)
        return {"inlineData": {"mimeType": mime or sniff(data), "data": data}, **extras}
    from_file = keep is None and "fileData" in (part.extra or {})
    if url.startswith(("http://", "https://")) and not (from_file or url.startswith(FILES_API)):
        raise InvalidRequest(
            "a Gemini backend accepts images only inline (base64 or a data: URL) or as "
            f"Files API URIs, not web URLs ({url[:80]})",
            param=where,
            code="unsupported_image_url",
        )
    mime = part.media_type or mimetypes.guess_type(url)[0] or "image/png"
    file_data = {"mimeType": mime, "fileUri": url, **(nested.get("fileData") or {})}
    return {"fileData": file_data, **extras}


def sniff(data: str) -> str:
    """The media type of base64 image data, from its first bytes (PNG when unknown)."""
    for prefix, mime in _SIGNATURES.items():
        if data.startswith(prefix):
            return mime
    if data.startswith("UklGR"):
        return "image/webp"
    return "image/png"
