"""Loop detection: every labelled loop found, no repetitive format flagged, any
chunking gives the whole-text result, memory and work stay bounded."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.guards import loops
from extproc.guards.loops import (
    MAX_CANDIDATES,
    STEP_CHARS,
    LoopConfig,
    LoopDetector,
    LoopFound,
    cut_loop,
    find_loop,
)

CORPUS = Path(__file__).resolve().parent / "corpus" / "loops"
CONFIG = LoopConfig()
# A held list marker ("12." waiting for its space) delays a step by this much at most.
HOLD = 15


def real_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(
        (CORPUS / "real" / "index.json").read_text(encoding="utf-8")
    )
    return entries


def real_text(slug: str) -> str:
    return (CORPUS / "real" / f"{slug}.txt").read_text(encoding="utf-8")


def clean_files() -> list[Path]:
    return sorted(path for path in (CORPUS / "clean").iterdir() if path.is_file())


def handmade_entries() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(
        (CORPUS / "handmade" / "index.json").read_text(encoding="utf-8")
    )
    return entries


def handmade_text(name: str) -> str:
    return (CORPUS / "handmade" / name).read_text(encoding="utf-8")


def all_texts() -> list[tuple[str, str]]:
    texts = [(f"real/{e['slug']}", real_text(e["slug"])) for e in real_entries()]
    texts += [(f"clean/{p.name}", p.read_text(encoding="utf-8")) for p in clean_files()]
    texts += [(f"handmade/{e['file']}", handmade_text(e["file"])) for e in handmade_entries()]
    return texts


def stream(chunks: list[str], config: LoopConfig = CONFIG) -> LoopFound | None:
    detector = LoopDetector(config)
    found = None
    for chunk in chunks:
        result = detector.feed(chunk)
        if result is not None:
            assert found is None, "a loop is reported once"
            found = result
    end = detector.finish()
    assert found is None or end is None
    return found or end


def split(text: str, points: list[int]) -> list[str]:
    cuts = sorted({min(max(p, 0), len(text)) for p in points})
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def sized(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


_MARKER = re.compile(r"(?m)^([ \t]{0,8})(\d{1,6})(?=[.)][ \t])")


def normalized(text: str) -> str:
    """The text as the detector compares it: list-marker numbers as '#'."""
    return _MARKER.sub(lambda m: m.group(1) + "#" * len(m.group(2)), text)


def check_found(text: str, found: LoopFound) -> None:
    """What a detection claims holds: text[start:end] repeats one period."""
    seen = normalized(text)
    assert 0 <= found.start < found.start + found.period <= found.end <= len(text)
    assert found.period >= CONFIG.min_period
    span = seen[found.start : found.end]
    assert all(span[i] == span[i - found.period] for i in range(found.period, len(span)))
    assert found.repeats == (found.end - found.start) // found.period
    assert found.text == seen[found.start : found.start + found.period][:200]


# --- the corpus -----------------------------------------------------------


def test_corpus_is_labelled_and_small() -> None:
    entries = real_entries()
    assert len(entries) >= 30
    assert {e["slug"] for e in entries} == {p.stem for p in (CORPUS / "real").glob("*.txt")}
    assert all(isinstance(e["loop"], bool) for e in entries), "every answer judged by a reader"
    assert any(e["loop"] for e in entries) and not all(e["loop"] for e in entries)
    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    assert total < 300_000


@pytest.mark.parametrize("entry", real_entries(), ids=lambda e: e["slug"])
def test_real_answer(entry: dict[str, Any]) -> None:
    text = real_text(entry["slug"])
    found = find_loop(text)
    if entry["loop"]:
        assert found is not None, entry["note"]
        check_found(text, found)
    else:
        assert found is None, found


@pytest.mark.parametrize("path", clean_files(), ids=lambda p: p.name)
def test_clean_text_never_flagged(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert find_loop(text) is None
    assert stream(sized(text, 20)) is None


@pytest.mark.parametrize("entry", handmade_entries(), ids=lambda e: e["file"])
def test_handmade_loop(entry: dict[str, Any]) -> None:
    text = handmade_text(entry["file"])
    found = find_loop(text)
    assert found is not None
    check_found(text, found)
    unit = entry["unit_chars"]
    expected = unit * -(-CONFIG.min_period // unit)
    assert found.period == expected
    loop_start = entry["start"]
    # The repetition may begin a little early (the prefix ends like the unit does)...
    assert loop_start - found.period <= found.start <= loop_start
    # ... and it is reported within a bounded number of chars after it began.
    worst = max(CONFIG.needed_span(found.period, in_code) for in_code in (False, True))
    assert found.end <= loop_start + worst + STEP_CHARS


def test_corpus_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Recall and false positives over the whole corpus (printed with -s)."""
    loops_found = loops_total = false_alarms = clean_total = 0
    for entry in real_entries():
        flagged = find_loop(real_text(entry["slug"])) is not None
        if entry["loop"]:
            loops_total += 1
            loops_found += flagged
        else:
            clean_total += 1
            false_alarms += flagged
    real = (loops_found, loops_total, false_alarms, clean_total)
    hand_found = sum(find_loop(handmade_text(e["file"])) is not None for e in handmade_entries())
    clean_flags = sum(find_loop(p.read_text(encoding="utf-8")) is not None for p in clean_files())
    with capsys.disabled():
        print(
            f"\nloops: real recall {real[0]}/{real[1]}, real false positives {real[2]}/{real[3]}; "
            f"hand-made recall {hand_found}/{len(handmade_entries())}, "
            f"hand-made clean false positives {clean_flags}/{len(clean_files())}"
        )
    assert real[0] == real[1] and real[2] == 0
    assert hand_found == len(handmade_entries()) and clean_flags == 0


# --- what counts as a loop --------------------------------------------------


def test_short_phrase_and_paragraph() -> None:
    text = "Sure. " + "I'm sorry. " * 50
    found = find_loop(text)
    assert found is not None and found.period == 11
    assert found.start <= 6 and found.end <= 6 + CONFIG.min_chars + STEP_CHARS
    paragraph = (
        "Thank you for your patience while I look into this question about your invoice. "
        "I will check the payment records, compare them with the order history and write back. "
    )
    found = find_loop("Hello.\n\n" + paragraph * 10)
    assert found is not None and found.period == len(paragraph)
    assert found.repeats == CONFIG.min_repeats  # reported as soon as the threshold is met


def test_code_fence_is_stricter() -> None:
    line = "WARN connection pool exhausted, waiting\n"  # 40 chars
    assert find_loop("Log:\n\n" + line * 15) is not None
    assert find_loop("Log:\n\n```\n" + line * 15 + "```\n") is None
    found = find_loop("Log:\n\n```\n" + line * 40 + "```\n")
    assert found is not None and found.end - found.start >= CONFIG.code_min_chars
    # Once the block is closed, prose thresholds again.
    assert find_loop("```\nx = 1\n```\n\n" + line * 15) is not None


def test_fence_lines_split_across_deltas() -> None:
    text = "Here:\n\n``" + "`python\n" + "    print('Processing item...')\n" * 15 + "```\n"
    assert find_loop(text) is None
    for size in (1, 2, 3, 5):
        assert stream(sized(text, size)) is None
    assert find_loop(text.replace("```", "~~~")) is None


def test_low_content_needs_much_more() -> None:
    assert find_loop("=" * 80 + "\n") is None
    assert find_loop(("=" * 80 + "\n\n") * 3) is None
    assert find_loop("| " + "|   " * 120 + "\n") is None  # 480 chars of empty cells
    found = find_loop("| " + "|   " * 400 + "\n")
    assert found is not None and found.end >= CONFIG.low_content_min_chars
    assert find_loop(("|" + " " * 40 + "|\n") * 60) is None  # an ASCII-art box side
    assert find_loop("0, " * 300) is None
    assert find_loop("ha" * 300) is None
    assert find_loop("\n" * 3000) is None
    assert find_loop("\n" * 5000) is not None


def test_numbered_list_with_the_same_item() -> None:
    items = "".join(f"{i}. Honeydew\n" for i in range(1, 80))
    found = find_loop("Fruits:\n" + items)
    assert found is not None and found.period == len("##. Honeydew\n")
    assert "Honeydew" in found.text and "#" in found.text  # the number reads as #
    # A list of different items, however alike their shape, is no loop ...
    rng = random.Random(9)
    words = ["".join(rng.choices("abcdefghijklmnop", k=rng.randint(4, 9))) for _ in range(90)]
    assert find_loop("".join(f"{i}. {word}\n" for i, word in enumerate(words))) is None
    # ... but the same three items over and over are.
    cycling = "".join(f"{i}. {word}\n" for i, word in enumerate(("apple pear fig " * 30).split()))
    assert find_loop(cycling) is not None
    # Digits that are not list markers stay content.
    logs = "".join(f"2024-05-01 12:00:{i % 60:02d} INFO GET /health 200\n" for i in range(80))
    assert find_loop(logs) is None
    tests = "".join(f"def test_{i}():\n    assert f({i}) == {i}\n\n" for i in range(60))
    assert find_loop(tests) is None


def test_no_space_cycle_uses_the_probe() -> None:
    found = find_loop("key=" + "abcdefghij0123456789" * 40)
    assert found is not None and found.period == 20


def test_cjk_loop() -> None:
    found = find_loop("关于这个问题，" + "我很抱歉，我不能回答这个问题。" * 40)  # noqa: RUF001
    assert found is not None and found.period == 15


def test_long_period() -> None:
    rng = random.Random(5)
    unit = ""
    while len(unit) < 1900:
        unit += rng.choice(("alpha", "beta", "gamma", "delta", "omega", "sigma")) + f"{len(unit)} "
    unit += ".\n"
    assert len(unit) <= CONFIG.max_period
    found = find_loop("Start.\n" + unit * 3)
    assert found is not None and found.period == len(unit)
    assert find_loop("Start.\n" + unit * 2) is None
    too_long = unit + unit[:400]
    assert len(too_long) > CONFIG.max_period
    assert find_loop("Start.\n" + too_long * 4) is None


@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from(["- ", "| ", "", "    ", "* [x] ", "1. "]),
            st.text(alphabet="abcdef ,.|-", max_size=40),
        ),
        min_size=1,
        max_size=120,
    )
)
@settings(max_examples=60, deadline=None)
def test_lines_with_unique_content_never_flagged(lines: list[tuple[str, str]]) -> None:
    """Lines of one shape whose content differs (a unique token each) are no loop."""
    text = "".join(f"{head}{body} <{n}>\n" for n, (head, body) in enumerate(lines))
    assert find_loop(text) is None


# --- streaming --------------------------------------------------------------


@pytest.mark.parametrize(("name", "text"), all_texts(), ids=[n for n, _ in all_texts()])
def test_any_chunking_gives_the_whole_text_result(name: str, text: str) -> None:
    whole = find_loop(text)
    rng = random.Random(name)
    for size in (1, 3, 20, 257, 5000):
        assert stream(sized(text, size)) == whole, size
    for _ in range(3):
        points = [rng.randrange(len(text) + 1) for _ in range(rng.randint(1, 60))]
        assert stream(split(text, points)) == whole


_PIECES = st.sampled_from(
    [
        "I'm sorry. ",
        "The cat sat on the mat. ",
        "\n",
        "```\n",
        "12. ",
        "3) ",
        "  ",
        "---",
        "abc",
        "def handle(x):\n    return x\n",
        "| a | b |\n",
        "我很抱歉，",  # noqa: RUF001
        "9",
    ]
)


@st.composite
def looping_texts(draw: st.DrawFn) -> str:
    prefix = "".join(draw(st.lists(_PIECES, max_size=20)))
    unit = "".join(draw(st.lists(_PIECES, min_size=1, max_size=8)))
    repeats = draw(st.integers(0, 60))
    suffix = "".join(draw(st.lists(_PIECES, max_size=10)))
    return prefix + unit * repeats + suffix


@given(text=looping_texts(), data=st.data())
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_chunking_property(text: str, data: st.DataObject) -> None:
    points = data.draw(st.lists(st.integers(0, len(text)), max_size=40))
    whole = find_loop(text)
    assert stream(split(text, points)) == whole
    if whole is not None:
        check_found(text, whole)


def test_feed_reports_when_the_step_completes() -> None:
    text = "Intro. " + "Please try again later. " * 40
    whole = find_loop(text)
    assert whole is not None
    for size in (1, 7, 20):
        detector = LoopDetector()
        for at in range(0, len(text), size):
            found = detector.feed(text[at : at + size])
            if found is not None:
                assert found == whole
                assert at < whole.end + HOLD and at + size >= whole.end
                assert detector.found == whole
                break
        else:
            pytest.fail("not found while streaming")
        # Later deltas are only counted.
        assert detector.feed("more text") is None
        assert detector.consumed == at + len(text[at : at + size]) + len("more text")


def test_finish_and_consumed() -> None:
    detector = LoopDetector()
    assert detector.feed("") is None
    assert detector.feed("Hello, world.") is None
    assert detector.consumed == len("Hello, world.")
    assert detector.finish() is None
    assert detector.finish() is None
    with pytest.raises(RuntimeError):
        detector.feed("more")
    # A loop that only completes in the last partial step is found by finish().
    text = "x " + "one two three. " * 40
    length = next(n for n in range(len(text)) if find_loop(text[:n]) is not None)
    assert length % STEP_CHARS
    detector = LoopDetector()
    assert detector.feed(text[:length]) is None
    found = detector.finish()
    assert found is not None and found.end == length


# --- cut_loop ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "text"), all_texts(), ids=[n for n, _ in all_texts()])
def test_cut_loop_keeps_the_first_occurrence(name: str, text: str) -> None:
    found = find_loop(text)
    if found is None:
        return
    cut = cut_loop(text, found)
    assert text.startswith(cut)
    assert len(cut) == found.start + found.period
    assert normalized(cut)[found.start :] == found.text or found.period > 200
    assert find_loop(cut) is None  # one occurrence is no loop


def test_cut_loop_example() -> None:
    text = "Answer: " + "I'm sorry. " * 50
    found = find_loop(text)
    assert found is not None
    assert cut_loop(text, found) == "Answer: I'm sorry. "[: found.start + found.period]
    assert cut_loop(text, found).count("sorry") == 1


# --- bounds -----------------------------------------------------------------


def random_prose(size: int, seed: int) -> str:
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 9)))
        for _ in range(3000)
    ]
    out: list[str] = []
    length = 0
    while length < size:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + ". "
        out.append(sentence + ("\n\n" if rng.random() < 0.1 else ""))
        length += len(out[-1])
    return "".join(out)[:size]


def near_loop(size: int) -> str:
    out: list[str] = []
    n = length = 0
    while length < size:
        out.append(f"The detector keeps a bounded window, run {n // 2}, nothing repeats long.\n\n")
        length += len(out[-1])
        n += 1
    return "".join(out)[:size]


ADVERSARIAL = {
    "random": lambda size: "".join(
        random.Random(1).choices("abcdefghijklmnopqrstuvwxyz0123456789 .,\n", k=size)
    ),
    "random-no-space": lambda size: "".join(random.Random(2).choices("abcdefgh", k=size)),
    "a": lambda size: "a" * size,
    "cycle-3": lambda size: ("abc" * size)[:size],
    "a-space": lambda size: ("a " * size)[:size],
    "prose": lambda size: random_prose(size, 3),
    "near-loop": near_loop,
}


def test_bounds_are_stated() -> None:
    detector = LoopDetector()
    # A fixed window: about 2 * max_period * long_min_repeats chars, and the slack.
    assert detector.window <= CONFIG.max_period * CONFIG.code_min_repeats + 64
    assert detector.max_buffer < 16 * 1024
    assert detector.max_keys <= CONFIG.max_period + 8 * STEP_CHARS


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
@pytest.mark.parametrize("size", [20, 4999, 1 << 20])
def test_memory_stays_bounded(name: str, size: int) -> None:
    """1 MB in deltas of 20 chars, ~5 KB or one of 1 MB: the buffers stay within their bounds."""
    text = ADVERSARIAL[name](1 << 20)
    detector = LoopDetector()
    limits = (detector.max_buffer, detector.max_keys, MAX_CANDIDATES)
    for at in range(0, len(text), size):
        detector.feed(text[at : at + size])
        held = detector.footprint()
        assert all(h <= limit for h, limit in zip(held, limits, strict=True)), held
    detector.finish()
    assert detector.consumed == len(text)


class _Work:
    """Counts the detector's non-constant work: chars compared while measuring runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.chars = 0
        run_start, suffix = loops._run_start, loops._matching_suffix

        def counted_run_start(buf: str, base: int, at: int, b: int, period: int, lim: int) -> int:
            start = run_start(buf, base, at, b, period, lim)
            self.chars += 4 * (b - start) + 64  # galloping compares at most ~4x the run
            return start

        def counted_suffix(buf: str, lo: int, hi: int, period: int) -> int:
            self.chars += 2 * (hi - lo)
            return suffix(buf, lo, hi, period)

        monkeypatch.setattr(loops, "_run_start", counted_run_start)
        monkeypatch.setattr(loops, "_matching_suffix", counted_suffix)


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_input_completes_in_linear_work(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = ADVERSARIAL[name](1 << 20)
    work = _Work(monkeypatch)
    found = find_loop(text)
    if name in ("random", "random-no-space", "prose", "near-loop"):
        assert found is None
    else:  # degenerate: found early, and the rest is only counted
        assert found is not None and found.end <= 8 * CONFIG.low_content_min_chars
    assert work.chars <= 16 * len(text)


def test_never_alarming_config_still_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """With thresholds out of reach, a 1 MB loop is tracked to the end in linear work."""
    config = LoopConfig(
        min_chars=10**9,
        code_min_chars=10**9,
        low_content_min_chars=10**9,
        max_period=64,
        min_repeats=2,
        long_min_repeats=2,
        code_min_repeats=2,
    )
    text = "Intro. " + "I'm sorry, I cannot do that. " * 40_000
    work = _Work(monkeypatch)
    detector = LoopDetector(config)
    for at in range(0, len(text), 20):
        assert detector.feed(text[at : at + 20]) is None
    assert work.chars <= 16 * len(text)
    assert detector.footprint()[2] <= MAX_CANDIDATES


# --- configuration ----------------------------------------------------------


def test_config_thresholds() -> None:
    assert CONFIG.needed_span(11) == CONFIG.min_chars
    assert CONFIG.needed_span(150) == 4 * 150
    assert CONFIG.needed_span(500) == 3 * 500
    assert CONFIG.needed_span(40, in_code=True) == CONFIG.code_min_chars
    assert CONFIG.needed_span(500, in_code=True) == 6 * 500
    assert CONFIG.needed_span(8, content=False) == CONFIG.low_content_min_chars
    assert CONFIG.needed_span(8, in_code=True, content=False, lines=True) == 8000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_period": 0},
        {"min_period": 50, "max_period": 20},
        {"min_repeats": 1},
        {"code_min_repeats": 1},
        {"min_chars": 0},
        {"long_period": 0},
        {"min_distinct": -1},
    ],
)
def test_config_rejects_nonsense(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        LoopConfig(**kwargs)
