"""Prometheus metrics of a running proxy (``python -m extproc`` with Envoy), scraped over HTTP.

One proxy (usage accounting and wire capture on, so their queue gauges exist) gets a known
mix of requests once; the tests read one scrape of ``/metrics`` and check exact values.
Other proxies of their own: metrics off, metrics on port 0, a metrics port already taken.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_upstream import FakeOpenAI
from tests.harness import (
    CLIENT_KEY,
    PROVIDER_KEY,
    ProxyProcess,
    fast_health,
    free_port,
    proxy_config,
    running_proxy,
    start_proxy,
)

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Scrape:
    """One parsed ``/metrics`` answer: family name -> type, and sample values."""

    types: dict[str, str]
    #: (sample name, sorted labels) -> value
    samples: dict[tuple[str, Labels], float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        types: dict[str, str] = {}
        samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return cls(types, samples)

    def series(self, name: str, **match: str) -> dict[Labels, float]:
        """The samples called ``name`` whose labels include ``match``, by labels."""
        return {
            labels: value
            for (sample, labels), value in self.samples.items()
            if sample == name and set(match.items()) <= set(labels)
        }

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]


def scrape(port: int) -> Scrape:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape.parse(response.text)


def backends(fake: FakeOpenAI) -> dict[str, Any]:
    return {
        "openai": {
            "type": "openai",
            "base_url": fake.base_url,
            "api_key": f"{PROVIDER_KEY}-alpha",
            "models": ["gpt-4o-mini", "gpt-4o"],
            **fast_health(),
        }
    }


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# -- one proxy, one known mix, one scrape ----------------------------------------------


@dataclass(frozen=True)
class Scraped:
    scrape: Scrape
    metrics_port: int


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, fake_a: FakeOpenAI) -> Iterator[Scraped]:
    tmp = tmp_path_factory.mktemp("metrics")
    port = free_port()
    config = proxy_config(
        backends(fake_a),  # no default_backend: an unknown model is an error
        metrics={"port": port},
        usage={"enabled": True, "database": f"sqlite:///{tmp / 'usage.sqlite'}"},
        capture={"enabled": True, "directory": str(tmp / "captures")},
    )
    with running_proxy(tmp, config) as proxy:
        send_mix(proxy, fake_a)
        yield Scraped(scrape(port), port)


def send_mix(proxy: ProxyProcess, fake: FakeOpenAI) -> None:
    chat = openai.OpenAI(base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0)
    claude = anthropic.Anthropic(
        base_url=proxy.anthropic_base_url, api_key=CLIENT_KEY, max_retries=0
    )
    # 2 complete answers, 1 stream: openai-chat -> openai, gpt-4o-mini
    fake.queue_response(
        "one", prompt_tokens=100, completion_tokens=20, cached_tokens=30, reasoning_tokens=5
    )
    chat.chat.completions.create(model="gpt-4o-mini", messages=user("1"))
    fake.queue_response("two", prompt_tokens=200, completion_tokens=40)
    chat.chat.completions.create(model="gpt-4o-mini", messages=user("2"))
    fake.queue_response("three", prompt_tokens=50, completion_tokens=10)
    chunks = list(
        chat.chat.completions.create(
            model="gpt-4o-mini",
            messages=user("3"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [c.usage.prompt_tokens for c in chunks if c.usage] == [50]
    # 1 complete answer, 1 stream: anthropic -> openai, gpt-4o
    fake.queue_response("four", prompt_tokens=400, completion_tokens=80, cached_tokens=100)
    claude.messages.create(model="openai:gpt-4o", max_tokens=64, messages=user("4"))
    fake.queue_response("five", prompt_tokens=60, completion_tokens=12)
    with claude.messages.stream(model="openai:gpt-4o", max_tokens=64, messages=user("5")) as stream:
        assert stream.get_final_message().usage.output_tokens == 12
    # The proxy's own errors.
    url = f"{proxy.openai_base_url}/chat/completions"
    broken = httpx.post(
        url,
        content=b'{"model": "gpt-4o-mini", "messages": [',
        timeout=10,
        headers={"content-type": "application/json"},
    )
    assert broken.json()["error"]["code"] == "invalid_json"
    unknown = httpx.post(url, json={"model": "nope", "messages": user("6")}, timeout=10)
    assert unknown.json()["error"]["code"] == "model_not_found"
    nowhere = httpx.post(url, json={"model": "nowhere:x", "messages": user("7")}, timeout=10)
    assert nowhere.json()["error"]["code"] == "backend_not_found"
    # A provider error, relayed: counted as a request with its status, not a proxy error.
    fake.set_fault(status=429, count=1, chat_only=True)
    with pytest.raises(openai.RateLimitError):
        chat.chat.completions.create(model="gpt-4o-mini", messages=user("8"))


def labels(**values: str) -> Labels:
    return tuple(sorted(values.items()))


def test_requests_by_frontend_backend_model_status(scraped: Scraped) -> None:
    s = scraped.scrape
    assert s.types["llm_proxy_requests"] == "counter"
    assert s.series("llm_proxy_requests_total") == {
        labels(frontend="openai-chat", backend="openai", model="gpt-4o-mini", status="200"): 3,
        labels(frontend="openai-chat", backend="openai", model="gpt-4o-mini", status="429"): 1,
        labels(frontend="anthropic", backend="openai", model="gpt-4o", status="200"): 2,
        # No backend chosen: the body was not JSON (no model either), or routing failed.
        labels(frontend="openai-chat", backend="", model="", status="400"): 1,
        labels(frontend="openai-chat", backend="", model="nope", status="404"): 1,
        labels(frontend="openai-chat", backend="", model="nowhere:x", status="404"): 1,
    }


def test_errors_by_code(scraped: Scraped) -> None:
    assert scraped.scrape.series("llm_proxy_errors_total") == {
        labels(frontend="openai-chat", code="invalid_json"): 1,
        labels(frontend="openai-chat", code="model_not_found"): 1,
        labels(frontend="openai-chat", code="backend_not_found"): 1,
    }


def test_tokens_by_kind(scraped: Scraped) -> None:
    tokens = {
        (dict(labels)["model"], dict(labels)["kind"]): value
        for labels, value in scraped.scrape.series(
            "llm_proxy_tokens_total", backend="openai"
        ).items()
    }
    assert tokens == {
        ("gpt-4o-mini", "input"): 100 + 200 + 50,
        ("gpt-4o-mini", "output"): 20 + 40 + 10,
        ("gpt-4o-mini", "cached"): 30,
        ("gpt-4o-mini", "reasoning"): 5,
        ("gpt-4o-mini", "cache_write"): 0,
        ("gpt-4o", "input"): 400 + 60,
        ("gpt-4o", "output"): 80 + 12,
        ("gpt-4o", "cached"): 100,
        ("gpt-4o", "reasoning"): 0,
        ("gpt-4o", "cache_write"): 0,
    }
    assert len(scraped.scrape.series("llm_proxy_tokens_total")) == len(tokens)


def _histogram_counts(s: Scrape, name: str) -> dict[Labels, float]:
    """``_count`` per label set, after checking ``+Inf`` bucket == count and sum > 0."""
    counts = s.series(f"{name}_count")
    for labels, count in counts.items():
        assert s.value(f"{name}_bucket", **dict(labels), le="+Inf") == count
        assert s.value(f"{name}_sum", **dict(labels)) > 0
    return counts


def test_request_duration_histogram(scraped: Scraped) -> None:
    s = scraped.scrape
    assert s.types["llm_proxy_request_seconds"] == "histogram"
    assert _histogram_counts(s, "llm_proxy_request_seconds") == {
        labels(frontend="openai-chat", streamed="false"): 6,  # 2 answers, 3 errors, the 429
        labels(frontend="openai-chat", streamed="true"): 1,
        labels(frontend="anthropic", streamed="false"): 1,
        labels(frontend="anthropic", streamed="true"): 1,
    }


def test_stage_histogram(scraped: Scraped) -> None:
    counts = _histogram_counts(scraped.scrape, "llm_proxy_stage_seconds")
    assert counts == {
        labels(stage="decode"): 9,  # every request with a body, the broken one too
        labels(stage="stage.sessions.headers"): 9,  # every request
        labels(stage="stage.sessions"): 8,  # all but the broken one (on by default) ...
        labels(stage="stage.dedup"): 8,
        labels(stage="stage.interactive"): 8,
        labels(stage="stage.redaction"): 8,
        labels(stage="stage.tool_loops"): 8,  # (provider_leg and compression when off: untimed)
        labels(stage="stage.routing"): 8,  # ... failed routes too
        labels(stage="encode"): 6,  # the routed ones
        labels(stage="translate"): 5,  # the answers translated for the client (not the 429)
    }


def test_ttft_histogram_for_streams_only(scraped: Scraped) -> None:
    s = scraped.scrape
    assert _histogram_counts(s, "llm_proxy_ttft_seconds") == {
        labels(frontend="openai-chat", backend="openai"): 1,
        labels(frontend="anthropic", backend="openai"): 1,
    }
    # A first token comes before the end of the request.
    for frontend in ("openai-chat", "anthropic"):
        ttft = s.value("llm_proxy_ttft_seconds_sum", frontend=frontend, backend="openai")
        whole = s.value("llm_proxy_request_seconds_sum", frontend=frontend, streamed="true")
        assert 0 < ttft <= whole


def test_writer_queue_gauges_present_when_capture_and_usage_are_on(scraped: Scraped) -> None:
    s = scraped.scrape
    for name in ("capture", "usage"):
        assert s.types[f"llm_proxy_{name}_queue_depth"] == "gauge"
        assert s.types[f"llm_proxy_{name}_dropped"] == "counter"
        assert s.value(f"llm_proxy_{name}_queue_depth") >= 0
        assert s.value(f"llm_proxy_{name}_dropped_total") == 0


def test_process_metrics_on_the_proxy_registry(scraped: Scraped) -> None:
    s = scraped.scrape
    assert s.value("process_resident_memory_bytes") > 0
    assert "python_info" in s.types


def test_upstream_attempts_by_outcome(scraped: Scraped) -> None:
    # Five answers and the 429 reached the provider; the refused requests never left.
    assert scraped.scrape.series("llm_proxy_upstream_attempts_total") == {
        labels(backend="openai", outcome="ok"): 5,
        labels(backend="openai", outcome="error"): 1,
    }


# -- proxies of their own ---------------------------------------------------------------


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_metrics_disabled_nothing_listens(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    port = free_port()
    config = proxy_config(backends(fake_a), metrics={"enabled": False, "port": port})
    with running_proxy(tmp_path, config) as proxy:
        answer = openai.OpenAI(
            base_url=proxy.openai_base_url, api_key=CLIENT_KEY, max_retries=0
        ).chat.completions.create(model="gpt-4o-mini", messages=user("unmetered"))
        assert answer.choices[0].message.content == "alpha says hello to gpt-4o-mini"
        assert _refused(port)
        assert "metrics on" not in proxy.log()


def test_metrics_port_zero_serves_on_the_logged_port(tmp_path: Path, fake_a: FakeOpenAI) -> None:
    config = proxy_config(backends(fake_a), metrics={"port": 0})
    with running_proxy(tmp_path, config) as proxy:
        found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proxy.log())
        assert found is not None, proxy.log()
        s = scrape(int(found.group(1)))
        assert "llm_proxy_requests" in s.types
        assert s.series("llm_proxy_requests_total") == {}  # no traffic yet


def test_busy_metrics_port_exits_non_zero_with_a_clear_message(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = proxy_config(backends(fake_a), metrics={"port": port})
        proxy = start_proxy(tmp_path, config, wait=False)
        try:
            code = proxy.proc.wait(timeout=30)
        finally:
            proxy.stop()
    log = proxy.log()
    assert code != 0, log
    assert f"cannot serve metrics on 127.0.0.1:{port}" in log
    assert "Address already in use" in log
    assert "Envoy started" not in log and "proxy ready" not in log
