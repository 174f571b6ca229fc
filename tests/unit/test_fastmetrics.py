"""The lean metric families scrape exactly like prometheus_client's own, and lose nothing."""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import metrics as prom_metrics
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from extproc.canonical import Usage
from extproc.observe.fastmetrics import FastCounterFamily, FastHistogramFamily
from extproc.observe.metrics import (
    REQUEST_BUCKETS,
    STAGE_BUCKETS,
    TTFT_BUCKETS,
    Metrics,
)

# The series of the proxy as they were scraped when they were prometheus_client
# metrics: (attribute, type, name, help, label names, buckets).
SPEC: tuple[tuple[str, str, str, str, tuple[str, ...], tuple[float, ...]], ...] = (
    (
        "requests",
        "counter",
        "llm_proxy_requests",
        "Client requests answered, by client protocol, backend instance, model, HTTP status.",
        ("frontend", "backend", "model", "status"),
        (),
    ),
    (
        "errors",
        "counter",
        "llm_proxy_errors",
        "Errors the proxy generated itself (not relayed from a provider), by error code.",
        ("frontend", "code"),
        (),
    ),
    (
        "request_seconds",
        "histogram",
        "llm_proxy_request_seconds",
        "Whole request duration as extproc saw it (first header to last byte).",
        ("frontend", "streamed"),
        REQUEST_BUCKETS,
    ),
    (
        "stage_seconds",
        "histogram",
        "llm_proxy_stage_seconds",
        "Processing time inside extproc per step (decode, pipeline stages, encode, "
        "response translation).",
        ("stage",),
        STAGE_BUCKETS,
    ),
    (
        "ttft_seconds",
        "histogram",
        "llm_proxy_ttft_seconds",
        "Time to first token of streamed answers, from the client request.",
        ("frontend", "backend"),
        TTFT_BUCKETS,
    ),
    (
        "tokens",
        "counter",
        "llm_proxy_tokens",
        "Tokens reported by providers, by kind (input includes cached; output includes reasoning).",
        ("backend", "model", "kind"),
        (),
    ),
    (
        "upstream_attempts",
        "counter",
        "llm_proxy_upstream_attempts",
        "Attempts sent to backend instances (retries and failover included), by outcome.",
        ("backend", "outcome"),
        (),
    ),
    (
        "safety_actions",
        "counter",
        "llm_proxy_safety_actions",
        "What the safety stages did: secrets redacted (by direction and kind), tool calls "
        "blocked (by stage and rule), lockouts.",
        ("stage", "action", "detail"),
        (),
    ),
    (
        "tokens_saved",
        "counter",
        "llm_proxy_tokens_saved",
        "Input tokens the proxy saved by compressing requests (estimated), by stage.",
        ("stage",),
        (),
    ),
)

KINDS = ("input", "output", "cached", "reasoning", "cache_write")
_CREATED = re.compile(r"^(\S+_created(?:\{.*\})?) \S+$", re.MULTILINE)


def _reference() -> tuple[CollectorRegistry, dict[str, Counter | Histogram]]:
    """The same series as plain prometheus_client metrics, in the same order."""
    registry = CollectorRegistry(auto_describe=True)
    out: dict[str, Counter | Histogram] = {}
    for attr, kind, name, doc, labels, buckets in SPEC:
        if kind == "counter":
            out[attr] = Counter(name, doc, labels, registry=registry)
        else:
            out[attr] = Histogram(name, doc, labels, buckets=buckets, registry=registry)
    return registry, out


def _counter(ref: dict[str, Counter | Histogram], attr: str, *labels: str) -> Counter:
    metric = ref[attr].labels(*labels)
    assert isinstance(metric, Counter)
    return metric


def _histogram(ref: dict[str, Counter | Histogram], attr: str, *labels: str) -> Histogram:
    metric = ref[attr].labels(*labels)
    assert isinstance(metric, Histogram)
    return metric


def _same_traffic(metrics: Metrics, ref: dict[str, Counter | Histogram]) -> None:
    """One sequence of observations, through the proxy's API and mirrored on ``ref``."""

    def request(
        frontend: str, backend: str, model: str, status: int | str, s: float, st: bool
    ) -> None:
        metrics.observe_request(frontend, backend, model, status, s, streamed=st)
        _counter(ref, "requests", frontend, backend, model, str(status)).inc()
        _histogram(ref, "request_seconds", frontend, "true" if st else "false").observe(s)

    def stage(name: str, seconds: float) -> None:
        metrics.observe_stage(name, seconds)
        _histogram(ref, "stage_seconds", name).observe(seconds)

    def tokens(backend: str, model: str, usage: Usage) -> None:
        metrics.add_tokens(backend, model, usage)
        children = [_counter(ref, "tokens", backend, model, kind) for kind in KINDS]
        for child, n in zip(
            children,
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cached_input_tokens,
                usage.reasoning_tokens,
                usage.cache_write_tokens,
            ),
            strict=True,
        ):
            if n:
                child.inc(n)

    request("openai-chat", "openai", "gpt-4o", 200, 1.2, False)
    request("openai-chat", "openai", "gpt-4o", 200, 0.3, False)
    request("anthropic", "openai.1", "gpt-4o", "429", 7.0, True)
    request("gemini", "", "unknown-model", 503, 0.005, False)  # exactly on a bound
    request("gemini", "", "unknown-model", 503, 0.0, False)
    request("openai-chat", "openai", "gpt-4o", 200, 400.0, True)  # above the last bound
    for frontend, code in (("gemini", "no_route"), ("gemini", "no_route"), ("oc", "too_large")):
        metrics.count_error(frontend, code)
        _counter(ref, "errors", frontend, code).inc()
    for seconds in (0.00002, 0.0004, 0.00001, 1e-9, 0.1 + 0.2, 2.0, 1.0, -0.5):
        stage("decode", seconds)
    stage("routing", 2.0)
    stage("stage.compression", 0.0031)
    for frontend, backend, seconds in (("openai-chat", "openai", 0.6), ("anthropic", "a", 0.025)):
        metrics.observe_ttft(frontend, backend, seconds)
        _histogram(ref, "ttft_seconds", frontend, backend).observe(seconds)
    tokens(
        "openai",
        "gpt-4o",
        Usage(input_tokens=100, output_tokens=40, cached_input_tokens=60, reasoning_tokens=10),
    )
    tokens("openai", "gpt-4o", Usage(input_tokens=5, output_tokens=1))
    tokens("anthropic", "claude", Usage(input_tokens=7, cache_write_tokens=3))
    for backend, outcome in (("openai", "ok"), ("openai.1", "retry"), ("openai.1", "retry")):
        metrics.count_attempt(backend, outcome)
        _counter(ref, "upstream_attempts", backend, outcome).inc()
    metrics.count_safety("commands", "blocked", "git-reset-hard")
    _counter(ref, "safety_actions", "commands", "blocked", "git-reset-hard").inc()
    metrics.count_safety("redaction", "request", "secret", 3)
    _counter(ref, "safety_actions", "redaction", "request", "secret").inc(3)
    metrics.save_tokens("compression", 1234)
    _counter(ref, "tokens_saved", "compression").inc(1234)


@pytest.fixture
def pair() -> Iterator[tuple[Metrics, CollectorRegistry]]:
    metrics = Metrics(runtime_collectors=False)
    registry, ref = _reference()
    _same_traffic(metrics, ref)
    yield metrics, registry


def test_the_text_exposition_is_identical_to_prometheus_client(
    pair: tuple[Metrics, CollectorRegistry],
) -> None:
    metrics, reference = pair
    ours, theirs = generate_latest(metrics.registry).decode(), generate_latest(reference).decode()
    assert "llm_proxy_stage_seconds_bucket" in theirs and "_created" in theirs
    # everything but the creation timestamps, byte for byte
    assert _CREATED.sub(r"\1 T", ours) == _CREATED.sub(r"\1 T", theirs)
    # the creation timestamps are the series' own, not the scrape's
    now = time.time()
    for line in _CREATED.finditer(ours):
        assert now - 60 < float(line.group(0).rsplit(" ", 1)[1]) <= now


def test_openmetrics_exposition_is_identical_too(pair: tuple[Metrics, CollectorRegistry]) -> None:
    metrics, reference = pair
    ours = generate_openmetrics(metrics.registry).decode()
    theirs = generate_openmetrics(reference).decode()
    assert _CREATED.sub(r"\1 T", ours) == _CREATED.sub(r"\1 T", theirs)


def test_without_created_series_the_scrape_is_byte_identical(
    pair: tuple[Metrics, CollectorRegistry], monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics, reference = pair
    monkeypatch.setattr(prom_metrics, "_use_created", False)
    ours = generate_latest(metrics.registry)
    assert b"_created" not in ours
    assert ours == generate_latest(reference)


def test_get_sample_value_returns_the_same_numbers(
    pair: tuple[Metrics, CollectorRegistry],
) -> None:
    metrics, reference = pair
    checked = 0
    for family in reference.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            got = metrics.registry.get_sample_value(sample.name, sample.labels)
            assert got == sample.value, (sample.name, sample.labels)
            checked += 1
    assert checked > 100
    stage = {"stage": "decode"}
    assert metrics.registry.get_sample_value("llm_proxy_stage_seconds_count", stage) == 8.0
    assert metrics.registry.get_sample_value(
        "llm_proxy_requests_total",
        {"frontend": "gemini", "backend": "", "model": "unknown-model", "status": "503"},
    ) == (2.0)


def test_the_families_describe_the_same_names() -> None:
    metrics = Metrics(runtime_collectors=False)
    reference, _ = _reference()
    ours = {(m.name, m.type, m.documentation) for m in metrics.registry.collect()}
    theirs = {(m.name, m.type, m.documentation) for m in reference.collect()}
    assert ours == theirs
    # a second metric of a taken name is refused, as before
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("llm_proxy_requests", "again", registry=metrics.registry)


# -- the families on their own ----------------------------------------------


def test_a_histogram_child_buckets_like_prometheus_client() -> None:
    registry = CollectorRegistry()
    reference = CollectorRegistry()
    fast = FastHistogramFamily("h", "doc", ("a",), buckets=(0.1, 1.0, 10.0), registry=registry)
    slow = Histogram("h", "doc", ("a",), buckets=(0.1, 1.0, 10.0), registry=reference)
    for x in (0.1, 0.10000001, 1.0, -3.0, math.inf, 11.0, 0.0, math.nan, 5):
        fast.labels("x").observe(x)
        slow.labels("x").observe(x)
    fast.labels(7)  # label values are strings, created series are shown with zeros
    slow.labels(7)
    for name, labels in (
        ("h_bucket", {"a": "x", "le": "0.1"}),
        ("h_bucket", {"a": "x", "le": "1.0"}),
        ("h_bucket", {"a": "x", "le": "10.0"}),
        ("h_bucket", {"a": "x", "le": "+Inf"}),
        ("h_count", {"a": "x"}),
        ("h_count", {"a": "7"}),
        ("h_bucket", {"a": "7", "le": "+Inf"}),
    ):
        assert registry.get_sample_value(name, labels) == reference.get_sample_value(name, labels)
    fast_sum = registry.get_sample_value("h_sum", {"a": "x"})
    assert fast_sum is not None and math.isnan(fast_sum)  # NaN counted nowhere but in _sum
    assert registry.get_sample_value("h_count", {"a": "x"}) == 8.0


def test_counters_refuse_to_go_down_and_labels_are_checked() -> None:
    registry = CollectorRegistry()
    counter = FastCounterFamily("c", "doc", ("a", "b"), registry=registry)
    child = counter.labels("x", "y")
    assert counter.labels("x", "y") is child
    child.inc()
    child.inc(2.5)
    assert child.get() == 3.5
    with pytest.raises(ValueError):
        child.inc(-1)
    with pytest.raises(ValueError):
        counter.labels("x")
    with pytest.raises(ValueError):
        FastCounterFamily("d", "doc", ("__reserved",), registry=registry)
    with pytest.raises(ValueError):
        FastHistogramFamily("e", "doc", ("le",), buckets=(1.0,), registry=registry)
    with pytest.raises(ValueError):
        FastHistogramFamily("f", "doc", (), buckets=(2.0, 1.0), registry=registry)
    assert registry.get_sample_value("c_total", {"a": "x", "b": "y"}) == 3.5
    # a name ending in _total is the family's name without it, as prometheus_client does
    FastCounterFamily("g_total", "doc", (), registry=registry).labels().inc()
    assert registry.get_sample_value("g_total", {}) == 1.0


@pytest.fixture
def switchy() -> Iterator[None]:
    """Switch threads as often as possible, so an unguarded ``+=`` would lose updates."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _hammer(threads: int, work: Callable[[], None]) -> None:
    start = threading.Barrier(threads)

    def run() -> None:
        start.wait()
        work()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()


@pytest.mark.usefixtures("switchy")
def test_no_increment_is_lost_between_threads() -> None:
    metrics = Metrics(runtime_collectors=False)
    rounds = 20_000

    def work() -> None:
        for _ in range(rounds):
            metrics.observe_stage("decode", 0.001)
            metrics.count_attempt("openai", "ok")
            metrics.observe_request("openai-chat", "openai", "m", 200, 1.0, streamed=False)

    _hammer(4, work)
    value = metrics.registry.get_sample_value
    assert value("llm_proxy_stage_seconds_count", {"stage": "decode"}) == 4 * rounds
    assert value("llm_proxy_stage_seconds_bucket", {"stage": "decode", "le": "0.001"}) == 4 * rounds
    assert value("llm_proxy_upstream_attempts_total", {"backend": "openai", "outcome": "ok"}) == (
        4 * rounds
    )
    chat = {"frontend": "openai-chat", "streamed": "false"}
    assert value("llm_proxy_request_seconds_sum", chat) == 4 * rounds


class _SlowFloat(float):
    """A float whose addition runs Python code, so a thread switch can split a ``+=``."""

    def __radd__(self, other: object) -> float:
        assert isinstance(other, float)
        return other + float(self)


@pytest.mark.usefixtures("switchy")
def test_an_interrupted_addition_is_not_lost() -> None:
    # CPython 3.11 never switches threads inside a float ``+=``; a Python-level
    # ``__radd__`` lets it, so this fails for children without their lock.
    registry = CollectorRegistry()
    hist = FastHistogramFamily("h", "doc", (), buckets=(1.0,), registry=registry).labels()
    counter = FastCounterFamily("c", "doc", (), registry=registry).labels()
    rounds = 20_000

    def work() -> None:
        one = _SlowFloat(1.0)
        for _ in range(rounds):
            hist.observe(one)
            counter.inc(one)

    _hammer(4, work)
    assert registry.get_sample_value("h_sum", {}) == 4 * rounds
    assert registry.get_sample_value("h_count", {}) == 4 * rounds
    assert registry.get_sample_value("c_total", {}) == 4 * rounds


@pytest.mark.usefixtures("switchy")
def test_a_scrape_reads_a_consistent_snapshot() -> None:
    registry = CollectorRegistry()
    family = FastHistogramFamily("h", "doc", ("a",), buckets=(0.5, 2.0), registry=registry)
    child = family.labels("x")
    done = threading.Event()
    seen: list[tuple[float, float]] = []

    def observe() -> None:
        for _ in range(50_000):
            child.observe(_SlowFloat(1.0))  # adds 1 to _count and 1.0 to _sum
        done.set()

    def scrape() -> None:
        while not done.is_set():
            for metric in family.collect():
                by_name = {s.name: s.value for s in metric.samples}
                seen.append((by_name["h_count"], by_name["h_sum"]))

    threads = [threading.Thread(target=observe), threading.Thread(target=scrape)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen
    assert all(count == total for count, total in seen)
