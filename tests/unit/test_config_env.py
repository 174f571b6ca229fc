"""``LLM_PROXY_*`` variables, the ``.env`` file and the precedence of config layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.config.env import IGNORED, all_env_names, env_name, env_settings
from extproc.config.envfile import read_env_file
from extproc.config.loader import build_config, load_config, resolve_config
from extproc.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_top_level_nested_and_map_keys() -> None:
    env = {
        "LLM_PROXY_PORT": "8010",
        "LLM_PROXY_SESSIONS__ENABLED": "false",
        "LLM_PROXY_ROUTING__STATIC_ROUTE": "openai:gpt-4o",
        "LLM_PROXY_BACKENDS__OPENAI__API_KEY": "sk-from-env",
        "LLM_PROXY_ROUTING__HEALTH__QUOTA_COOLDOWN": "30m",
    }
    config = load_config(None, env=env)
    assert config.port == 8010
    assert config.sessions.enabled is False
    assert config.routing.static_route == "openai:gpt-4o"
    api_key = config.backends["openai"].api_key
    assert api_key is not None and api_key.get_secret_value() == "sk-from-env"
    assert config.routing.health.quota_cooldown == 1800.0


def test_values_are_yaml_except_for_string_keys() -> None:
    env = {
        "LLM_PROXY_REDACTION__ALLOW": "[a, b]",
        "LLM_PROXY_ROUTING__ALIASES": '{fast: "openai:gpt-4o-mini|openai:gpt-4o"}',
        "LLM_PROXY_BACKENDS__OPENAI__MODELS": "[gpt-4o]",
        # YAML would read these as False and 83: string keys are taken as written.
        "LLM_PROXY_ENVOY__LOG_LEVEL": "off",
        "LLM_PROXY_BACKENDS__OPENAI__API_KEY": "0123",
        "LLM_PROXY_ENVOY__CONCURRENCY": "3",
    }
    config = load_config(None, env=env)
    assert config.redaction.allow == ["a", "b"]
    assert config.routing.aliases == {"fast": "openai:gpt-4o-mini|openai:gpt-4o"}
    assert config.envoy.log_level == "off"
    api_key = config.backends["openai"].api_key
    assert api_key is not None and api_key.get_secret_value() == "0123"
    assert config.envoy.concurrency == 3


def test_empty_value_clears_an_optional_string() -> None:
    file_config = {"default_backend": "openai:gpt-4o", "backends": {"openai": {}}}
    assert build_config(file_config, env={}).default_backend == "openai:gpt-4o"
    settings = env_settings({"LLM_PROXY_DEFAULT_BACKEND": ""})
    assert [(s.path, s.value) for s in settings] == [(("default_backend",), None)]


def test_alias_names_are_the_yaml_names() -> None:
    [setting] = env_settings({"LLM_PROXY_BACKENDS__OPENAI__SCHEMA": "openai-responses"})
    assert setting.path == ("backends", "openai", "schema")
    config = load_config(None, env={"LLM_PROXY_BACKENDS__OPENAI__SCHEMA": "openai-responses"})
    assert config.backend_schema("openai") == "openai-responses"


def test_env_merges_into_the_files_map(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        "backends:\n  openai:\n    models: [gpt-4o]\n    api_key: sk-file\n",
    )
    config = load_config(path, env={"LLM_PROXY_BACKENDS__OPENAI__API_KEY": "sk-env"})
    backend = config.backends["openai"]
    assert backend.models == ["gpt-4o"]
    assert backend.api_key is not None and backend.api_key.get_secret_value() == "sk-env"


def test_precedence_defaults_file_env_cli(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "port: 8100\nadmin_port: 9100\ngrpc_port: 50100\n")
    env = {"LLM_PROXY_ADMIN_PORT": "9200", "LLM_PROXY_GRPC_PORT": "50200"}
    config, provenance = resolve_config(
        path, {"grpc_port": 50300}, env, flags={"grpc_port": "--grpc-port"}
    )
    assert config.port == 8100  # file
    assert config.admin_port == 9200  # env over file
    assert config.grpc_port == 50300  # cli over env
    assert config.anthropic_port == 8001  # default
    assert provenance.source_of(("port",)) == "file"
    assert provenance.source_of(("admin_port",)) == "env LLM_PROXY_ADMIN_PORT"
    assert provenance.source_of(("grpc_port",)) == "cli --grpc-port"
    assert provenance.source_of(("anthropic_port",)) == "default"


def test_a_whole_section_replaces_what_the_file_set_below_it(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "routing:\n  aliases: {a: 'openai:x'}\n")
    env = {"LLM_PROXY_ROUTING__ALIASES": "{b: 'openai:y'}"}
    config, provenance = resolve_config(path, env=env)
    assert config.routing.aliases == {"b": "openai:y"}
    assert provenance.source_of(("routing", "aliases", "b")) == "env LLM_PROXY_ROUTING__ALIASES"
    assert ("routing", "aliases", "a") not in provenance.sources


def test_unknown_name_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env={"LLM_PROXY_SESIONS__ENABLED": "false"})
    assert "LLM_PROXY_SESIONS__ENABLED" in str(info.value)
    assert "did you mean LLM_PROXY_SESSIONS__ENABLED?" in str(info.value)
    with pytest.raises(ConfigError, match="did you mean LLM_PROXY_BACKENDS__OPENAI__API_KEY"):
        load_config(None, env={"LLM_PROXY_BACKENDS__OPENAI__API_KY": "x"})
    with pytest.raises(ConfigError, match="did you mean LLM_PROXY_METRICS__PORT"):
        load_config(None, env={"LLM_PROXY_METRICS_PORT": "1"})


def test_names_below_a_leaf_or_empty_segments_are_errors() -> None:
    with pytest.raises(ConfigError, match="has no keys below it"):
        load_config(None, env={"LLM_PROXY_PORT__X": "1"})
    with pytest.raises(ConfigError, match="empty segment"):
        load_config(None, env={"LLM_PROXY_SESSIONS____ENABLED": "1"})


def test_errors_never_print_values() -> None:
    secret = "sk-very-secret-value-123"
    for env in (
        {"LLM_PROXY_BACKENDS__OPENAI__API_KY": secret},
        {"LLM_PROXY_API_KEYS": f"[{secret}"},  # not YAML
        {"LLM_PROXY_PORT": secret},  # not a port
    ):
        with pytest.raises(ConfigError) as info:
            load_config(None, env=env)
        assert secret not in str(info.value)


def test_the_proxys_own_names_and_file_references_are_not_config_keys(tmp_path: Path) -> None:
    env = {name: "1" for name in IGNORED}
    assert env_settings(env) == []
    path = write(tmp_path / "c.yaml", "admin_keys: ['${LLM_PROXY_ADMIN_KEY}']\n")
    config = load_config(path, env={"LLM_PROXY_ADMIN_KEY": "adm-1"})
    assert [k.get_secret_value() for k in config.admin_keys] == ["adm-1"]


def test_other_variables_are_ignored() -> None:
    assert env_settings({"PATH": "/bin", "LLM_PROXYX": "1", "OPENAI_API_KEY": "k"}) == []


def test_every_name_has_a_documented_form() -> None:
    names = all_env_names()
    assert "LLM_PROXY_PORT" in names
    assert "LLM_PROXY_SESSIONS__ENABLED" in names
    assert "LLM_PROXY_BACKENDS__<NAME>__API_KEY" in names
    assert "LLM_PROXY_BACKENDS__<NAME>__HEALTH_CHECK__INTERVAL" in names
    assert env_name(("routing", "static_route")) == "LLM_PROXY_ROUTING__STATIC_ROUTE"


# -- the .env file -------------------------------------------------------------


def test_env_file_feeds_references_and_names(tmp_path: Path) -> None:
    dotenv_path = write(
        tmp_path / "x.env",
        "# comment\nOPENAI_API_KEY=sk-dotenv\nexport LLM_PROXY_PORT=8020\n"
        "LLM_PROXY_ADMIN_PORT=9300\n",
    )
    read, dotenv = read_env_file(dotenv_path)
    assert read == dotenv_path
    path = write(tmp_path / "c.yaml", "backends:\n  openai:\n    api_key: ${OPENAI_API_KEY}\n")
    # The process environment wins over the file.
    config, provenance = resolve_config(path, env={"LLM_PROXY_ADMIN_PORT": "9400"}, dotenv=dotenv)
    api_key = config.backends["openai"].api_key
    assert api_key is not None and api_key.get_secret_value() == "sk-dotenv"
    assert config.port == 8020
    assert config.admin_port == 9400
    assert provenance.source_of(("port",)) == ".env LLM_PROXY_PORT"
    assert provenance.source_of(("admin_port",)) == "env LLM_PROXY_ADMIN_PORT"


def test_default_env_file_is_dot_env_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert read_env_file(None) == (None, {})
    write(tmp_path / ".env", "LLM_PROXY_PORT=8030\nBARE\n")
    read, values = read_env_file(None)
    assert read == Path(".env")
    assert values == {"LLM_PROXY_PORT": "8030"}


def test_a_named_env_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_env_file(tmp_path / "missing.env")


def test_unknown_names_in_the_env_file_are_errors_too(tmp_path: Path) -> None:
    _, dotenv = read_env_file(write(tmp_path / "e", "LLM_PROXY_PROT=1\n"))
    with pytest.raises(ConfigError, match="did you mean LLM_PROXY_PORT"):
        resolve_config(None, env={}, dotenv=dotenv)
