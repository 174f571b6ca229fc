"""Config: YAML + ${ENV} + CLI overrides, validated in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.cli import build_parser, overrides_from
from extproc.config import build_config, load_config, substitute_env
from extproc.errors import ConfigError


def minimal(**extra: object) -> dict[str, object]:
    return {"backends": {"openai": {"api_key": "sk-fake", "models": ["gpt-4o"]}}, **extra}


def test_defaults() -> None:
    config = build_config({})
    assert (config.host, config.port, config.grpc_port, config.admin_port) == (
        "127.0.0.1",
        8000,
        50051,
        9901,
    )
    assert config.timeouts.request == 0  # no 15 s route default for long generations
    assert config.limits.max_request_bytes == 32 * 1024 * 1024


def test_env_substitution_with_default_and_escape() -> None:
    tree = {"a": "${KEY}", "b": ["x-${MISSING:-fallback}"], "c": "$${LITERAL}", "d": 5}
    assert substitute_env(tree, {"KEY": "sk-fake-1"}) == {
        "a": "sk-fake-1",
        "b": ["x-fallback"],
        "c": "${LITERAL}",
        "d": 5,
    }


def test_missing_env_names_the_variable_and_place() -> None:
    with pytest.raises(ConfigError, match=r"backends\.openai\.api_key: .*FAKE_NOPE"):
        build_config({"backends": {"openai": {"api_key": "${FAKE_NOPE}"}}}, env={})


def test_env_cannot_inject_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("backends:\n  openai:\n    api_key: ${KEY}\n")
    config = load_config(path, env={"KEY": "x\nport: 1"})
    assert config.backends["openai"].api_key is not None
    assert config.backends["openai"].api_key.get_secret_value() == "x\nport: 1"
    assert config.port == 8000


def test_secrets_do_not_print() -> None:
    config = build_config(minimal())
    assert "sk-fake" not in repr(config)
    assert "sk-fake" not in str(config.model_dump())


def test_cli_overrides_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("port: 9000\nbackends:\n  openai: {api_key: sk-fake}\n")
    args = build_parser().parse_args(
        ["--config", str(path), "--port", "8123", "--default-backend", "openai:gpt-4o"]
    )
    config = load_config(args.config, overrides_from(args))
    assert config.port == 8123
    assert config.default_backend == "openai:gpt-4o"


def test_multi_user_keys_from_cli() -> None:
    args = build_parser().parse_args(
        ["--multi-user-mode", "--api-keys", "k1, k2", "--host", "0.0.0.0"]
    )
    config = build_config({}, overrides_from(args))
    assert config.multi_user_mode
    assert [k.get_secret_value() for k in config.api_keys] == ["k1", "k2"]
    assert config.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"backends": {"Open AI": {}}}, "backend instance name"),
        ({"backends": {"mystery": {"base_url": "http://x"}}}, "unknown type 'mystery'"),
        ({"backends": {"openai-compatible": {}}}, "needs a base_url"),
        ({"backends": {"openai": {"base_url": "ftp://x"}}}, "http:// or https://"),
        ({"backends": {"openai": {"base_url": "https://u:p@x/v1"}}}, "credentials"),
        ({"backends": {"openai": {"headers": {"Host": "x"}}}}, "cannot be set"),
        (minimal(models={"smart": {"failover": ["nope:gpt-4o"]}}), "unknown backend instance"),
        (minimal(models={"smart": {"failover": ["gpt-4o"]}}), "must be 'instance:model'"),
        (minimal(models={"smart": {"failover": []}}), "at least 1"),
        (minimal(default_backend="gpt-4o"), "unknown backend"),
        (minimal(default_backend="nope:gpt-4o"), "unknown backend"),
        ({"host": "0.0.0.0"}, "loopback only"),
        ({"multi_user_mode": True}, "api_keys"),
        ({"port": 9901}, "must differ"),
        ({"limits": {"max_request_bytes": "lots"}}, "not a size"),
        ({"timeouts": {"stream_idle": "soon"}}, "not a duration"),
        ({"surprise": 1}, "Extra inputs"),
    ],
)
def test_invalid_configs(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config(raw)


def test_sizes_and_durations() -> None:
    config = build_config(
        {"limits": {"max_request_bytes": "2MiB"}, "timeouts": {"stream_idle": "250ms"}}
    )
    assert config.limits.max_request_bytes == 2 * 1024 * 1024
    assert config.timeouts.stream_idle == 0.25


def test_instances_and_families() -> None:
    config = build_config(
        {
            "backends": {
                "openai.2": {"api_key": "a"},
                "openai": {"api_key": "b"},
                "openai.1": {"api_key": "c"},
                "local": {"type": "openai-compatible", "base_url": "http://127.0.0.1:1/v1/"},
            }
        }
    )
    assert config.families() == {"openai": ["openai", "openai.1", "openai.2"], "local": ["local"]}
    assert config.backend_type("openai.2") == "openai"
    assert config.base_url("openai.1") == "https://api.openai.com/v1"
    assert config.base_url("local") == "http://127.0.0.1:1/v1"


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml")
