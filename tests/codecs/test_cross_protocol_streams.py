"""Streams from one protocol to another: replay tokens never cross providers."""

from __future__ import annotations

import json

from extproc.codecs import get_codec
from extproc.codecs.base import ResponseContext

CTX = ResponseContext(request_model="m", estimated_input_tokens=10)


def translate(source: str, target: str, stream: bytes) -> bytes:
    decoder = get_codec(source).stream_decoder()
    encoder = get_codec(target).stream_encoder(CTX)
    out = b"".join(encoder.encode(events) for _, events in decoder.feed(stream))
    out += b"".join(encoder.encode(events) for _, events in decoder.finish())
    return out + encoder.finish()


GEMINI_SIGNED = (
    b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"plan","thought":true,'
    b'"thoughtSignature":"Z2VtaW5pLXNpZw=="}]}}],"responseId":"r1","modelVersion":"g"}\r\n\r\n'
    b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":"done"}]},'
    b'"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1,'
    b'"totalTokenCount":4},"responseId":"r1","modelVersion":"g"}\r\n\r\n'
)

ANTHROPIC_SIGNED = b"".join(
    f"event: {json.loads(data)['type']}\ndata: {data}\n\n".encode()
    for data in [
        '{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
        '"model":"c","content":[],"stop_reason":null,"stop_sequence":null,'
        '"usage":{"input_tokens":5,"output_tokens":1}}}',
        '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}',
        '{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"plan"}}',
        '{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta",'
        '"signature":"YW50aHJvcGljLXNpZw=="}}',
        '{"type":"content_block_stop","index":0}',
        '{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}',
        '{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"done"}}',
        '{"type":"content_block_stop","index":1}',
        '{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
        '"usage":{"output_tokens":2}}',
        '{"type":"message_stop"}',
    ]
)


def test_gemini_signature_never_reaches_an_anthropic_client() -> None:
    out = translate("gemini", "anthropic", GEMINI_SIGNED)
    assert b"Z2VtaW5pLXNpZw==" not in out
    assert b'"thinking":"plan"' in out  # the reasoning itself is shown


def test_anthropic_signature_never_reaches_a_gemini_client() -> None:
    out = translate("anthropic", "gemini", ANTHROPIC_SIGNED)
    assert b"YW50aHJvcGljLXNpZw==" not in out
    assert b'"thought":true' in out


def test_signatures_survive_their_own_protocol() -> None:
    assert b"Z2VtaW5pLXNpZw==" in translate("gemini", "gemini", GEMINI_SIGNED)
    assert b"YW50aHJvcGljLXNpZw==" in translate("anthropic", "anthropic", ANTHROPIC_SIGNED)


def test_no_replay_token_reaches_chat_or_responses_clients() -> None:
    for target in ("openai-chat", "openai-responses"):
        for source, stream, token in (
            ("gemini", GEMINI_SIGNED, b"Z2VtaW5pLXNpZw=="),
            ("anthropic", ANTHROPIC_SIGNED, b"YW50aHJvcGljLXNpZw=="),
        ):
            out = translate(source, target, stream)
            assert token not in out, (source, target)
            assert b"done" in out
