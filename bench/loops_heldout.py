"""Loop detection on answers it was not tuned on: fresh prompts, the bundled SmolLM2, greedy.

The detector's thresholds were chosen against tests/guards/corpus/loops; these 20
prompts were written afterwards and labelled by reading each answer (``LOOPS``:
the answers a reader calls degenerate repetition). Prints recall and false
positives::

    .venv/bin/python -m bench.loops_heldout      # about 2 minutes on 2 cores
"""

from __future__ import annotations

import sys
from typing import Any

from extproc.canonical import Finish, TextDelta
from extproc.guards.loops import LoopConfig, find_loop
from extproc.pipeline.answer import AnswerChain
from extproc.pipeline.stages.loops import LoopFilter
from tests.real_model import gguf_path

PROMPTS = [
    "Name every country in Africa.",
    "Explain recursion to a child.",
    "Write a haiku about snow.",
    "Count from 1 to 100.",
    "What are the days of the week? Repeat them three times.",
    "Write a Python function that reverses a string, with tests.",
    "Describe the water cycle.",
    "Give me 40 synonyms for happy.",
    "List all US states and their capitals.",
    "Write a limerick about a cat.",
    "Tell me a bedtime story about a dragon.",
    "What is the derivative of x^2? Show each step.",
    "Write a markdown table of 20 planets and moons.",
    "Translate 'good morning' into as many languages as you can.",
    "Write an SQL query to find duplicate emails, and explain it.",
    "Summarize the plot of Hamlet.",
    "List the first 30 Fibonacci numbers.",
    "Write a JSON array of 15 users with name and age.",
    "Why is the sky blue?",
    "Write a song chorus about summer and repeat the chorus.",
]
#: Indexes of the answers a reader calls loops (labelled by reading them, 2026-12-08).
LOOPS = frozenset({0, 2, 4, 7, 8, 10, 13, 15, 17, 19})


def stage_cuts(text: str, chunk: int = 4) -> bool:
    """Whether the loop stage, as deployed, cuts ``text`` streamed in ``chunk``-char deltas."""
    chain = AnswerChain([LoopFilter(LoopConfig(), True, None)])
    for at in range(0, len(text), chunk):
        chain.feed([TextDelta(text[at : at + chunk])])
        if chain.ended is not None:
            return True
    chain.feed([Finish("stop")])
    chain.finish()
    return chain.ended is not None


def main() -> int:
    from llama_cpp import Llama

    model = Llama(model_path=str(gguf_path()), n_ctx=4096, seed=0, verbose=False)
    hits = false_alarms = stage_hits = stage_false = 0
    for i, prompt in enumerate(PROMPTS):
        # As tests/guards/record_loops.py records the tuning corpus: greedy.
        reply: Any = model.create_chat_completion(
            messages=[{"role": "user", "content": prompt}],
            temperature=0.0,
            top_k=1,
            max_tokens=600,
            seed=0,
        )
        text = str(reply["choices"][0]["message"]["content"])
        found = find_loop(text)
        streamed = stage_cuts(text)
        label = "loop " if i in LOOPS else "clean"
        print(
            f"{label} {'CUT' if found else '   '} stage {'CUT' if streamed else '   '} "
            f"{len(text):5d} chars  {prompt}"
        )
        if found is not None:
            hits += i in LOOPS
            false_alarms += i not in LOOPS
        if streamed:
            stage_hits += i in LOOPS
            stage_false += i not in LOOPS
    clean = len(PROMPTS) - len(LOOPS)
    print(f"recall {hits}/{len(LOOPS)}, false positives {false_alarms}/{clean}")
    print(
        f"the loop stage, streamed in 4-char deltas: recall {stage_hits}/{len(LOOPS)}, "
        f"false positives {stage_false}/{clean}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
