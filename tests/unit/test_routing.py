"""Model selectors and their resolution against the cluster plan."""

from __future__ import annotations

import pytest

from extproc.canonical import CanonicalRequest
from extproc.config import build_config
from extproc.errors import InvalidRequest, NotFound
from extproc.routing import Resolver, apply_params, parse_selector, plan_clusters


@pytest.mark.parametrize(
    ("text", "backend", "model", "params"),
    [
        ("gpt-4o", None, "gpt-4o", {}),
        ("openai:gpt-4o", "openai", "gpt-4o", {}),
        ("openai.1:gpt-4o", "openai.1", "gpt-4o", {}),
        ("meta-llama/llama-3-70b", None, "meta-llama/llama-3-70b", {}),
        ("qwen/qwen3:free", None, "qwen/qwen3:free", {}),
        ("openrouter:qwen/qwen3:free", "openrouter", "qwen/qwen3:free", {}),
        ("ollama:qwen3:8b", "ollama", "qwen3:8b", {}),
        ("gpt-4o?temperature=0.5", None, "gpt-4o", {"temperature": 0.5}),
        (
            "openai:gpt-4o?max_tokens=10&stream_usage=true&tag=a%21b&x=",
            "openai",
            "gpt-4o",
            {"max_tokens": 10, "stream_usage": True, "tag": "a!b", "x": ""},
        ),
        ("  gpt-4o  ", None, "gpt-4o", {}),
    ],
)
def test_parse(text: str, backend: str | None, model: str, params: dict[str, object]) -> None:
    selector = parse_selector(text)
    assert (selector.backend, selector.model, selector.params) == (backend, model, params)


@pytest.mark.parametrize(
    "text", ["", ":gpt-4o", "openai:", "a|b", "a^b", "a!b", "gpt-4o?&&=", "gpt-4o?a"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        parse_selector(text)
    assert exc.value.status == 400 and exc.value.param == "model"


CONFIG = {
    "backends": {
        "openai": {"api_key": "a", "models": ["gpt-4o"]},
        "openai.1": {"api_key": "b", "models": ["gpt-4o", "o3"]},
        "vllm.1": {"type": "openai-compatible", "base_url": "http://10.0.0.1:8000/v1"},
        "vllm.2": {"type": "openai-compatible", "base_url": "http://10.0.0.2:8000/v1"},
    },
    "models": {"smart": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o-mini?temperature=0.1"]}},
    "default_backend": "openai:gpt-4o-mini",
}


@pytest.fixture
def resolver() -> Resolver:
    return Resolver(build_config(CONFIG))


@pytest.mark.parametrize(
    ("text", "cluster", "model"),
    [
        ("smart", "pool/smart", None),
        ("gpt-4o", "instance/openai", "gpt-4o"),
        ("o3", "instance/openai.1", "o3"),
        ("openai.1:gpt-4o", "instance/openai.1", "gpt-4o"),
        ("openai:anything", "instance/openai", "anything"),
        ("vllm:llama", "family/vllm", "llama"),
        ("vllm.2:llama", "instance/vllm.2", "llama"),
        ("unlisted-model", "instance/openai", "unlisted-model"),
        ("default", "instance/openai", "gpt-4o-mini"),
    ],
)
def test_resolve(resolver: Resolver, text: str, cluster: str, model: str | None) -> None:
    decision = resolver.resolve(parse_selector(text))
    assert (decision.cluster, decision.model) == (cluster, model)
    assert decision.cluster in resolver.plans


def test_unknown_backend(resolver: Resolver) -> None:
    with pytest.raises(NotFound) as exc:
        resolver.resolve(parse_selector("anthropic:claude"))
    assert exc.value.code == "backend_not_found" and exc.value.status == 404


def test_unknown_model_without_default() -> None:
    config = dict(CONFIG)
    del config["default_backend"]
    with pytest.raises(NotFound) as exc:
        Resolver(build_config(config)).resolve(parse_selector("mystery"))
    assert exc.value.code == "model_not_found"


def test_plan() -> None:
    plans = plan_clusters(build_config(CONFIG))
    assert set(plans) == {
        "instance/openai",
        "instance/openai.1",
        "instance/vllm.1",
        "instance/vllm.2",
        "family/vllm",
        "pool/smart",
    }
    pool = plans["pool/smart"]
    assert [(e.instance, e.priority, e.model, e.params) for e in pool.endpoints] == [
        ("openai", 0, "gpt-4o", {}),
        ("openai.1", 1, "gpt-4o-mini", {"temperature": 0.1}),
    ]
    assert pool.endpoints[0].tls and pool.endpoints[0].authority == "api.openai.com"
    assert plans["family/vllm"].endpoints[1].authority == "10.0.0.2:8000"


def test_apply_params() -> None:
    request = CanonicalRequest(protocol="openai-chat", model="m", temperature=1.0)
    apply_params(
        request,
        {"temperature": 0, "max_tokens": 5, "reasoning_effort": "low", "top_k": 40, "stop": "END"},
    )
    assert request.temperature == 0.0
    assert request.max_output_tokens == 5
    assert request.reasoning is not None and request.reasoning.effort == "low"
    assert request.stop == ["END"]
    assert request.passthrough == {"top_k": 40}
    with pytest.raises(InvalidRequest):
        apply_params(request, {"temperature": "warm"})
    with pytest.raises(InvalidRequest):
        apply_params(request, {"messages": "x"})


def test_where_each_cluster_encodes() -> None:
    plans = plan_clusters(
        build_config(
            {
                **CONFIG,
                "models": {
                    "smart": CONFIG["models"]["smart"],  # type: ignore[index]
                    "twin": {"failover": ["openai:gpt-4o", "openai.1:gpt-4o"]},
                    "mixed-path": {"failover": ["vllm.1:m", "vllm.2:m"]},
                },
            }
        )
    )
    assert plans["instance/openai"].encoding == "router"
    assert plans["pool/smart"].encoding == "per-attempt"  # different models
    assert plans["pool/twin"].encoding == "shared"  # same type, model, base path
    assert plans["family/vllm"].encoding == "shared"  # model comes from the request
    assert plans["pool/mixed-path"].encoding == "shared"


def test_bad_pool_parameters_fail_at_startup() -> None:
    from extproc.errors import ConfigError

    config = build_config(
        {**CONFIG, "models": {"hot": {"failover": ["openai:gpt-4o?temperature=very"]}}}
    )
    with pytest.raises(ConfigError, match=r"models\.hot: target .*temperature"):
        plan_clusters(config)
