"""The cost of loop detection on a streamed answer, in-process: µs per chunk, µs per KB.

    python -m bench.loops_check
    python -m bench.loops_check --sizes 10,100,1000 --repeat 5 --chunk 20

Each text is fed to a fresh ``LoopDetector`` in ``--chunk``-character deltas (a
typical LLM delta is ~20 characters). Per text and size:

* ``µs/KB``: the whole stream's wall time (median of ``--repeat`` runs after a
  warm-up, ``bench.stats.time_us``) per KB of text: flat from 10 KB to 1 MB
  means the work per byte does not grow with the answer;
* ``p50``/``p99``/``max``: µs per ``feed()`` call, each call timed on its own
  (``perf_counter_ns``; about 0.1 µs of the figure is the timer itself);
* ``buffer``: the most characters the detector held at once.

Texts: ``prose`` and ``code`` (bench.secrets_scan's, no loop), ``near-loop``
(a paragraph written twice, then changed, and so on: every run is tracked and
breaks just under the threshold, the tracker's costliest realistic case),
``looping`` (a clean start then one paragraph forever: detected after a few
hundred characters, then each delta is only counted).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from time import perf_counter_ns

from bench.secrets_scan import code, prose
from bench.stats import percentile, time_us
from extproc.guards.loops import LoopDetector

_PARAGRAPH = (
    "The detector reads every delta once and keeps only a bounded window, so a long "
    "answer costs the same per byte as a short one. Run {n}: nothing here repeats for long."
)


def near_loop(size: int) -> str:
    out: list[str] = []
    length = 0
    n = 0
    while length < size:
        out.append(_PARAGRAPH.format(n=n // 2) + "\n\n")
        length += len(out[-1])
        n += 1
    return "".join(out)[:size]


def looping(size: int) -> str:
    start = prose(2048)
    unit = "I am sorry, I cannot help with that request. Let me try again. "
    return (start + unit * (size // len(unit) + 1))[:size]


TEXTS: dict[str, Callable[[int], str]] = {
    "prose": prose,
    "code": code,
    "near-loop": near_loop,
    "looping": looping,
}


def chunks_of(text: str, chunk: int) -> list[str]:
    return [text[i : i + chunk] for i in range(0, len(text), chunk)]


def per_chunk_us(chunks: list[str]) -> tuple[list[float], int, bool]:
    """Each feed() timed on its own; also the largest buffer seen and whether a loop was found."""
    detector = LoopDetector()
    samples: list[float] = []
    most = 0
    found = False
    for piece in chunks:
        started = perf_counter_ns()
        result = detector.feed(piece)
        samples.append((perf_counter_ns() - started) / 1000)
        found = found or result is not None
        most = max(most, detector.footprint()[0])
    return sorted(samples), most, found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loops_check", description=__doc__)
    parser.add_argument("--sizes", default="10,100,1000", help="answer sizes, KB, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=20, help="stream chunk size, characters")
    args = parser.parse_args(argv)
    sizes = [int(kb) for kb in args.sizes.split(",")]

    print(f"stream, {args.chunk}-char chunks; µs per feed() and per KB")
    print(
        f"{'text':<11}{'KB':>6}{'loop':>6}{'µs/KB':>9}{'p50':>8}{'p99':>8}{'max':>8}{'buffer':>9}"
    )
    for name, make in TEXTS.items():
        for kb in sizes:
            text = make(kb * 1024)
            chunks = chunks_of(text, args.chunk)

            def run(chunks: list[str] = chunks) -> None:
                detector = LoopDetector()
                for piece in chunks:
                    detector.feed(piece)

            per_kb = time_us(run, args.repeat) / (len(text.encode()) / 1024)
            samples, most, found = per_chunk_us(chunks)
            print(
                f"{name:<11}{kb:>6}{'yes' if found else 'no':>6}{per_kb:>9.1f}"
                f"{percentile(samples, 50):>8.2f}{percentile(samples, 99):>8.2f}"
                f"{samples[-1]:>8.1f}{most:>9}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
