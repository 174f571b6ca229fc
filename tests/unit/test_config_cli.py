"""``python -m extproc config check|show`` and the flags that map to config keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from extproc.cli import FLAGS, build_parser, load_from_args, main, overrides_from

SECRET = "sk-live-abcdefghijklmnop"

CONFIG = f"""\
port: 8100
backends:
  openai:
    api_key: {SECRET}
    models: [gpt-4o]
usage:
  database: postgresql://proxy:db-password-1@db.example/usage
routing:
  aliases:
    smart: "openai:gpt-4o|openai:gpt-4o-mini"
"""


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray LLM_PROXY_* variables, and no .env from the working directory."""
    for name in list(os.environ):
        if name.startswith("LLM_PROXY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.yaml"
    path.write_text(CONFIG)
    return path


def test_check_valid(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(config_file)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: ")
    assert "1 backend, 0 model routes, 1 alias, listening on 127.0.0.1:8100" in out
    assert len(out.strip().splitlines()) == 1


def test_check_invalid_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: seventy\nrouting:\n  race_delay: soon\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "port: Input should be a valid integer" in err
    assert "routing.race_delay: not a duration" in err


def test_check_runs_the_routing_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "backends: {openai: {api_key: k}}\nrouting:\n  aliases: {x: 'openai:a|openai:'}\n"
    )
    assert main(["config", "check", str(bad)]) == 2
    assert "routing.aliases.x: model selector 'openai:' names no model" in capsys.readouterr().err


def test_check_names_the_env_variable(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LLM_PROXY_PORT", "seventy")
    assert main(["config", "check", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "port: Input should be a valid integer" in err
    assert "(from env LLM_PROXY_PORT)" in err
    monkeypatch.delenv("LLM_PROXY_PORT")
    monkeypatch.setenv("LLM_PROXY_PROT", "1")
    assert main(["config", "check", str(config_file)]) == 2
    assert "did you mean LLM_PROXY_PORT?" in capsys.readouterr().err


def test_check_needs_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "check"])
    assert info.value.code == 2
    assert main(["config"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_show_masks_secrets_and_says_where_values_came_from(
    config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / ".env").write_text("LLM_PROXY_ADMIN_PORT=9300\nDOTENV_ONLY=dotenv-value-9\n")
    monkeypatch.setenv("LLM_PROXY_SESSIONS__ENABLED", "false")
    argv = ["config", "show", "--config", str(config_file), "--grpc-port", "50200"]
    argv += ["--api-keys", "proxy-key-1,proxy-key-2", "--capture", "caps"]
    code = main(argv)
    assert code == 0
    out = capsys.readouterr().out
    for secret in (SECRET, "db-password-1", "proxy-key-1", "dotenv-value-9"):
        assert secret not in out
    # Top-level keys only (nested sections have ports too).
    lines = {line.split(":", 1)[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert lines["port"].endswith("# from file")
    assert lines["admin_port"].endswith("# from .env LLM_PROXY_ADMIN_PORT")
    assert lines["grpc_port"].endswith("# from cli --grpc-port")
    assert lines["anthropic_port"].endswith("# default")
    assert lines["api_keys"].endswith("# from cli --api-keys")
    assert "enabled: false  # from env LLM_PROXY_SESSIONS__ENABLED" in out
    assert "directory: caps  # from cli --capture" in out
    assert "postgresql://proxy:**********@db.example/usage" in out
    shown = yaml.safe_load(out)
    assert shown["port"] == 8100
    assert shown["admin_port"] == 9300
    assert shown["backends"]["openai"]["api_key"] == "**********"
    assert shown["api_keys"] == ["**********", "**********"]
    assert shown["sessions"]["enabled"] is False
    assert shown["routing"]["aliases"] == {"smart": "openai:gpt-4o|openai:gpt-4o-mini"}


def test_show_without_a_file_is_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "config file: (none)" in out
    body = [line for line in out.splitlines() if not line.startswith("#") and ": " in line]
    assert body and all(line.endswith("# default") for line in body)


def test_env_file_flag(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env_file = tmp_path / "proxy.env"
    env_file.write_text("LLM_PROXY_PORT=8200\n")
    assert main(["config", "check", str(config_file), "--env-file", str(env_file)]) == 0
    assert "listening on 127.0.0.1:8200" in capsys.readouterr().out
    assert main(["config", "check", str(config_file), "--env-file", "missing.env"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_feature_flags_set_their_keys(config_file: Path) -> None:
    argv = ["--config", str(config_file), "--no-metrics", "--metrics-port", "9555"]
    argv += ["--capture", "caps", "--usage-db", "sqlite:///u.sqlite"]
    argv += ["--tracing-endpoint", "http://127.0.0.1:4318/v1/traces"]
    argv += ["--redis-url", "redis://127.0.0.1:6390/1"]
    argv += ["--disable-redaction", "--disable-loop-detection", "--disable-sessions"]
    argv += ["--disable-interactive-commands", "--static-route", "openai:x"]
    args = build_parser().parse_args(argv)
    config = load_from_args(args).config
    assert config.metrics.enabled is False
    assert config.metrics.port == 9555
    assert (config.capture.enabled, config.capture.directory) == (True, "caps")
    assert (config.usage.enabled, config.usage.database) == (True, "sqlite:///u.sqlite")
    assert config.tracing.enabled is True
    assert config.tracing.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert (config.state.backend, config.state.redis_url) == ("redis", "redis://127.0.0.1:6390/1")
    assert config.redaction.enabled is False
    assert config.loop_detection.enabled is False
    assert config.sessions.enabled is False
    assert config.interactive.enabled is False
    assert config.routing.static_route == "openai:x"


def test_no_flags_change_nothing(config_file: Path) -> None:
    args = build_parser().parse_args(["--config", str(config_file)])
    assert {k: v for k, v in overrides_from(args).items() if v is not None} == {}


def test_every_override_key_names_its_flag() -> None:
    argv = ["--no-metrics", "--capture", "d", "--usage-db", "sqlite:///x"]
    argv += ["--tracing-endpoint", "u", "--redis-url", "redis://h", "--disable-redaction"]
    argv += ["--disable-loop-detection", "--disable-sessions", "--disable-interactive-commands"]
    argv += ["--api-keys", "k"]
    args = build_parser().parse_args(argv)
    assert set(overrides_from(args)) <= set(FLAGS)
    options = {o for action in build_parser()._actions for o in action.option_strings}
    assert set(FLAGS.values()) <= options
