"""Prometheus metrics: the public API, scraped over a real socket and parsed."""

from __future__ import annotations

import inspect
import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from extproc.canonical import Usage
from extproc.config.model import MetricsConfig
from extproc.observe import metrics as metrics_module
from extproc.observe.metrics import OTHER, Metrics, NullMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def served() -> Iterator[tuple[Metrics, int]]:
    metrics = Metrics()
    _, port = metrics.serve("127.0.0.1", 0)
    try:
        yield metrics, port
    finally:
        metrics.shutdown()


def scrape(port: int) -> tuple[Samples, set[str]]:
    """GET /metrics over TCP; every sample by (name, labels), and the family names."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(response.text):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def buckets(samples: Samples, name: str, **labels: str) -> dict[float, float]:
    """``le`` -> cumulative count of one histogram series."""
    out: dict[float, float] = {}
    for (n, lbls), v in samples.items():
        d = dict(lbls)
        le = d.pop("le", None)
        if n == f"{name}_bucket" and le is not None and d == labels:
            out[float(le)] = v
    return out


def test_counters_and_histograms_scraped_exactly(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    metrics.observe_request("openai-chat", "openai", "gpt-4o", 200, 1.2, streamed=False)
    metrics.observe_request("openai-chat", "openai", "gpt-4o", 200, 0.3, streamed=False)
    metrics.observe_request("anthropic", "openai.1", "gpt-4o", "429", 7.0, streamed=True)
    metrics.observe_request("gemini", "", "unknown-model", 503, 0.004, streamed=False)
    metrics.count_error("gemini", "no_route")
    metrics.count_error("gemini", "no_route")
    metrics.count_error("openai-chat", "request_too_large")
    metrics.observe_stage("decode", 0.00002)
    metrics.observe_stage("decode", 0.0004)
    metrics.observe_stage("routing", 2.0)
    metrics.observe_ttft("openai-chat", "openai", 0.6)
    metrics.add_tokens(
        "openai",
        "gpt-4o",
        Usage(input_tokens=100, output_tokens=40, cached_input_tokens=60, reasoning_tokens=10),
    )
    metrics.add_tokens("openai", "gpt-4o", Usage(input_tokens=5, output_tokens=1))
    metrics.add_tokens("anthropic", "claude", Usage(input_tokens=7, cache_write_tokens=3))
    metrics.count_attempt("openai", "ok")
    metrics.count_attempt("openai.1", "retry")
    metrics.count_attempt("openai.1", "retry")

    samples, families = scrape(port)

    assert series(samples, "llm_proxy_requests_total") == {
        frozenset(
            {
                "frontend": "openai-chat",
                "backend": "openai",
                "model": "gpt-4o",
                "status": "200",
            }.items()
        ): 2.0,
        frozenset(
            {
                "frontend": "anthropic",
                "backend": "openai.1",
                "model": "gpt-4o",
                "status": "429",
            }.items()
        ): 1.0,
        frozenset(
            {"frontend": "gemini", "backend": "", "model": "unknown-model", "status": "503"}.items()
        ): 1.0,
    }
    assert series(samples, "llm_proxy_errors_total") == {
        frozenset({"frontend": "gemini", "code": "no_route"}.items()): 2.0,
        frozenset({"frontend": "openai-chat", "code": "request_too_large"}.items()): 1.0,
    }

    # request_seconds: count, sum and cumulative buckets per (frontend, streamed)
    rs = "llm_proxy_request_seconds"
    assert value(samples, f"{rs}_count", frontend="openai-chat", streamed="false") == 2.0
    assert value(samples, f"{rs}_sum", frontend="openai-chat", streamed="false") == pytest.approx(
        1.5
    )
    assert value(samples, f"{rs}_count", frontend="anthropic", streamed="true") == 1.0
    chat = buckets(samples, rs, frontend="openai-chat", streamed="false")
    assert min(chat) == 0.005 and max(chat) == float("inf")
    assert sorted(chat) == [*metrics_module.REQUEST_BUCKETS, float("inf")]
    assert chat[0.25] == 0.0 and chat[0.5] == 1.0 and chat[1.0] == 1.0 and chat[2.5] == 2.0
    assert buckets(samples, rs, frontend="gemini", streamed="false")[0.005] == 1.0

    # stage_seconds: fine buckets from 10 µs
    decode = buckets(samples, "llm_proxy_stage_seconds", stage="decode")
    assert min(decode) == 0.00001
    assert decode[0.00001] == 0.0 and decode[0.000025] == 1.0 and decode[0.0005] == 2.0
    routing = buckets(samples, "llm_proxy_stage_seconds", stage="routing")
    assert routing[1.0] == 0.0 and routing[float("inf")] == 1.0

    assert value(samples, "llm_proxy_ttft_seconds_count", frontend="openai-chat", backend="openai")
    assert value(
        samples, "llm_proxy_ttft_seconds_sum", frontend="openai-chat", backend="openai"
    ) == pytest.approx(0.6)

    assert series(samples, "llm_proxy_tokens_total") == {
        frozenset({"backend": "openai", "model": "gpt-4o", "kind": "input"}.items()): 105.0,
        frozenset({"backend": "openai", "model": "gpt-4o", "kind": "output"}.items()): 41.0,
        frozenset({"backend": "openai", "model": "gpt-4o", "kind": "cached"}.items()): 60.0,
        frozenset({"backend": "openai", "model": "gpt-4o", "kind": "reasoning"}.items()): 10.0,
        frozenset({"backend": "openai", "model": "gpt-4o", "kind": "cache_write"}.items()): 0.0,
        frozenset({"backend": "anthropic", "model": "claude", "kind": "input"}.items()): 7.0,
        frozenset({"backend": "anthropic", "model": "claude", "kind": "output"}.items()): 0.0,
        frozenset({"backend": "anthropic", "model": "claude", "kind": "cached"}.items()): 0.0,
        frozenset({"backend": "anthropic", "model": "claude", "kind": "reasoning"}.items()): 0.0,
        frozenset({"backend": "anthropic", "model": "claude", "kind": "cache_write"}.items()): 3.0,
    }
    assert series(samples, "llm_proxy_upstream_attempts_total") == {
        frozenset({"backend": "openai", "outcome": "ok"}.items()): 1.0,
        frozenset({"backend": "openai.1", "outcome": "retry"}.items()): 2.0,
    }
    # the process collectors of the registry's own
    assert {"process_cpu_seconds", "python_info"} <= families


def test_every_metric_is_described_before_use(served: tuple[Metrics, int]) -> None:
    _, port = served
    _, families = scrape(port)
    assert {
        "llm_proxy_requests",
        "llm_proxy_errors",
        "llm_proxy_request_seconds",
        "llm_proxy_stage_seconds",
        "llm_proxy_ttft_seconds",
        "llm_proxy_tokens",
        "llm_proxy_upstream_attempts",
    } <= families


def test_stage_timer_observes_the_block_even_when_it_raises() -> None:
    metrics = Metrics(runtime_collectors=False)
    with metrics.stage_timer("encode"):
        pass
    with pytest.raises(RuntimeError), metrics.stage_timer("encode"):
        raise RuntimeError("boom")
    count = metrics.registry.get_sample_value("llm_proxy_stage_seconds_count", {"stage": "encode"})
    total = metrics.registry.get_sample_value("llm_proxy_stage_seconds_sum", {"stage": "encode"})
    assert count == 2.0
    assert total is not None and 0.0 < total < 1.0


def test_model_label_cardinality_is_capped() -> None:
    metrics = Metrics(model_limit=3, runtime_collectors=False)
    for i in range(10):
        metrics.observe_request("openai-chat", "openai", f"m{i}", 200, 0.1, streamed=False)
    # a model seen before the cap keeps its own series afterwards
    metrics.observe_request("openai-chat", "openai", "m1", 200, 0.1, streamed=False)
    metrics.add_tokens("openai", "m0", Usage(input_tokens=1))
    metrics.add_tokens("openai", "random-new-model", Usage(input_tokens=2))
    metrics.add_tokens("openai", "another-one", Usage(input_tokens=3))

    samples, _ = parse(metrics)
    by_model = {
        dict(labels)["model"]: v
        for labels, v in series(samples, "llm_proxy_requests_total").items()
    }
    assert by_model == {"m0": 1.0, "m1": 2.0, "m2": 1.0, OTHER: 7.0}
    inputs = {
        dict(labels)["model"]: v
        for labels, v in series(samples, "llm_proxy_tokens_total").items()
        if dict(labels)["kind"] == "input"
    }
    assert inputs == {"m0": 1.0, OTHER: 5.0}


def test_long_model_names_are_cut() -> None:
    metrics = Metrics(runtime_collectors=False)
    huge = "x" * 100_000
    metrics.observe_request("openai-chat", "openai", huge, 200, 0.1, streamed=False)
    metrics.observe_request("openai-chat", "openai", huge + "y", 200, 0.1, streamed=False)
    samples, _ = parse(metrics)
    models = [dict(lbls)["model"] for lbls in series(samples, "llm_proxy_requests_total")]
    assert models == ["x" * metrics_module.MODEL_LABEL_MAX_CHARS]


def test_child_cache_is_bounded_and_stays_correct(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "CHILD_CACHE_LIMIT", 4)
    metrics = Metrics(runtime_collectors=False)
    for _ in range(3):
        for i in range(10):
            metrics.count_error("openai-chat", f"code{i}")
            metrics.add_tokens(f"b{i}", "m", Usage(output_tokens=1))
    assert len(metrics._errors) <= 4 and len(metrics._tokens) <= 4
    samples, _ = parse(metrics)
    assert set(series(samples, "llm_proxy_errors_total").values()) == {3.0}
    assert len(series(samples, "llm_proxy_errors_total")) == 10
    outputs = [
        v
        for labels, v in series(samples, "llm_proxy_tokens_total").items()
        if dict(labels)["kind"] == "output"
    ]
    assert outputs == [3.0] * 10


def test_queue_watchers_read_callables_at_scrape_time(served: tuple[Metrics, int]) -> None:
    metrics, port = served
    state = {"capture_depth": 0, "capture_dropped": 0}
    metrics.watch_queue(
        "capture",
        depth=lambda: state["capture_depth"],
        dropped=lambda: state["capture_dropped"],
    )
    metrics.watch_queue("usage", depth=lambda: 4)

    samples, families = scrape(port)
    assert value(samples, "llm_proxy_capture_queue_depth") == 0.0
    assert value(samples, "llm_proxy_capture_dropped_total") == 0.0
    assert value(samples, "llm_proxy_usage_queue_depth") == 4.0
    assert "llm_proxy_usage_dropped" not in families

    state.update(capture_depth=17, capture_dropped=3)

    def broken() -> int:
        raise OSError("queue gone")

    metrics.watch_queue("usage", depth=broken, dropped=lambda: 9)
    samples, families = scrape(port)
    assert value(samples, "llm_proxy_capture_queue_depth") == 17.0
    assert value(samples, "llm_proxy_capture_dropped_total") == 3.0
    # a failing callback drops its own series, never the scrape
    assert "llm_proxy_usage_queue_depth" not in families
    assert value(samples, "llm_proxy_usage_dropped_total") == 9.0

    metrics.watch_queue("usage")
    _, families = scrape(port)
    assert not {"llm_proxy_usage_queue_depth", "llm_proxy_usage_dropped"} & families

    with pytest.raises(ValueError):
        metrics.watch_queue("Bad-Name", depth=lambda: 1)


def test_serve_binds_loopback_on_a_free_port_and_shuts_down() -> None:
    metrics = Metrics(runtime_collectors=False)
    server, port = metrics.serve("127.0.0.1", 0)
    assert server is not None
    assert port > 0 and server.server_address[0] == "127.0.0.1"
    assert metrics.port == port
    with pytest.raises(RuntimeError):
        metrics.serve("127.0.0.1", 0)
    assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
    metrics.shutdown()
    metrics.shutdown()  # idempotent
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_two_instances_have_independent_registries() -> None:
    a = Metrics()
    b = Metrics()
    a.count_error("openai-chat", "x")
    assert (
        a.registry.get_sample_value(
            "llm_proxy_errors_total", {"frontend": "openai-chat", "code": "x"}
        )
        == 1.0
    )
    assert (
        b.registry.get_sample_value(
            "llm_proxy_errors_total", {"frontend": "openai-chat", "code": "x"}
        )
        is None
    )


def test_from_config() -> None:
    assert type(Metrics.from_config(MetricsConfig())) is Metrics
    assert isinstance(Metrics.from_config(MetricsConfig(enabled=False)), NullMetrics)
    assert MetricsConfig().port == 9464


def test_disabled_variant_is_a_complete_no_op() -> None:
    null = Metrics.disabled()
    assert isinstance(null, NullMetrics) and not null.enabled
    # every public method of Metrics is overridden, so none touches a metric
    public = {
        name
        for name, member in vars(Metrics).items()
        if inspect.isfunction(member) and not name.startswith("_")
    }
    assert public, "introspection found nothing"
    for name in public:
        assert name in vars(NullMetrics), f"NullMetrics does not override {name}"

    null.observe_request("openai-chat", "openai", "gpt-4o", 200, 1.0, streamed=True)
    null.count_error("openai-chat", "x")
    null.observe_stage("decode", 0.1)
    with null.stage_timer("decode"):
        pass
    null.observe_ttft("openai-chat", "openai", 0.2)
    null.add_tokens("openai", "gpt-4o", Usage(input_tokens=1))
    null.count_attempt("openai", "ok")
    null.watch_queue("capture", depth=lambda: 1)
    assert null.serve("127.0.0.1", 0) == (None, 0)
    null.shutdown()
    assert null.exposition() == b""
    assert list(null.registry.collect()) == []


def parse(metrics: Metrics) -> tuple[Samples, set[str]]:
    """The same parse as :func:`scrape`, from the registry's text without HTTP."""
    samples: Samples = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        families.add(family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, families
