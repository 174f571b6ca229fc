"""The cost of secret redaction, in-process: µs per KB of text, µs per streamed chunk.

    python -m bench.secrets_scan
    python -m bench.secrets_scan --kb 400 --repeat 30

Texts: English prose, code (the repository's own Python sources), the same code
with a fake secret every ~2 KB, and a 1 KB message (the fixed cost of a call).
``find`` is the scan alone; ``redact`` adds the placeholders. The stream rows
feed the prose and the code through a ``StreamRedactor`` in ~20-character
chunks (a typical LLM delta) and report µs per chunk.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from bench.stats import time_us
from extproc.safety.secrets import Redactor, StreamRedactor

ROOT = Path(__file__).resolve().parents[1]
_VOCABULARY = (
    "the proxy reads each request decides where it goes and streams the answer back while "
    "stages check what the agent is about to run a model may echo keys it saw in a file so "
    "every delta is scanned before it reaches the client which must not slow the stream"
)
WORDS = _VOCABULARY.split()
FAKE_SECRETS = (
    "ghp_FAKE0000ExampleFAKE0000ExampleFAKE00",
    "AKIAIOSFODNN7EXAMPLE",
    "sk-proj-" + "FAKE0000example_" * 8,
    "postgres://app:FAKEpass0000@db:5432/app",
    'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
)


def prose(size: int) -> str:
    rng = random.Random(7)
    out: list[str] = []
    length = 0
    while length < size:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20)))
        out.append(sentence.capitalize() + ". ")
        length += len(out[-1])
        if rng.random() < 0.15:
            out.append("\n\n")
    return "".join(out)[:size]


def code(size: int) -> str:
    parts: list[str] = []
    length = 0
    for path in sorted((ROOT / "extproc").rglob("*.py")):
        if "_pb" in path.parts:
            continue
        parts.append(path.read_text(encoding="utf-8"))
        length += len(parts[-1])
        if length >= size:
            break
    text = "\n".join(parts)
    while len(text) < size:
        text += text
    return text[:size]


def with_secrets(text: str, every: int = 2048) -> str:
    out: list[str] = []
    for i, start in enumerate(range(0, len(text), every)):
        out.append(text[start : start + every])
        out.append(f"\n{FAKE_SECRETS[i % len(FAKE_SECRETS)]}\n")
    return "".join(out)


def stream_us_per_chunk(redactor: Redactor, text: str, chunk: int, repeat: int) -> float:
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]

    def run() -> None:
        streamer = StreamRedactor(redactor)
        for piece in chunks:
            streamer.feed(piece)
        streamer.finish()

    return time_us(run, repeat) / len(chunks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.secrets_scan", description=__doc__)
    parser.add_argument("--kb", type=int, default=200, help="size of each text, KB")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--chunk", type=int, default=20, help="stream chunk size, characters")
    args = parser.parse_args(argv)
    size = args.kb * 1024
    redactor = Redactor()
    scanner = redactor.scanner
    texts = {
        "prose": prose(size),
        "code": code(size),
        "code + secrets": with_secrets(code(size)),
    }
    print(f"{'text':<16}{'KB':>7}{'findings':>10}{'find µs/KB':>13}{'redact µs/KB':>15}")
    for name, text in texts.items():
        kb = len(text.encode()) / 1024
        found = len(scanner.find(text))
        find_us = time_us(partial(scanner.find, text), args.repeat) / kb
        redact_us = time_us(partial(redactor.redact_text, text), args.repeat) / kb
        print(f"{name:<16}{kb:>7.0f}{found:>10}{find_us:>13.2f}{redact_us:>15.2f}")
    message = prose(1024)
    print(f"1 KB message: find {time_us(lambda: scanner.find(message), 2000):.1f} µs per call")
    print(f"stream, {args.chunk}-char chunks:")
    for name in ("prose", "code", "code + secrets"):
        text = texts[name][: 64 * 1024]
        per_chunk = stream_us_per_chunk(redactor, text, args.chunk, max(3, args.repeat // 3))
        print(f"  {name:<16}{per_chunk:>8.2f} µs per chunk")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
