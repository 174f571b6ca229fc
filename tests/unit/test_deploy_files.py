"""Committed deployment files stay what the generators produce, and Envoy accepts them."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import yaml

from tests.harness import REPO, envoy_binary

CA = "/etc/ssl/certs/ca-certificates.crt"


def test_envoy_example_is_current() -> None:
    fresh = subprocess.run(
        [
            sys.executable,
            "-m",
            "extproc",
            "envoy-config",
            "--config",
            "deploy/config.example.yaml",
            "--ca-file",
            CA,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    ).stdout
    assert (REPO / "envoy" / "envoy.example.yaml").read_text() == fresh, (
        "regenerate envoy/envoy.example.yaml (see envoy/README.md)"
    )


def _render_module() -> object:
    path = REPO / "deploy" / "kubernetes" / "render.py"
    spec = importlib.util.spec_from_file_location("render", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kubernetes_configmap_is_current(tmp_path: Path) -> None:
    render = _render_module()
    fresh = render.render_configmap()  # type: ignore[attr-defined]
    committed = (REPO / "deploy" / "kubernetes" / "configmap.yaml").read_text()
    assert committed == fresh, "run: python deploy/kubernetes/render.py"
    data = yaml.safe_load(committed)["data"]
    assert yaml.safe_load(data["proxy.yaml"])["multi_user_mode"] is True
    boot = tmp_path / "envoy.yaml"
    boot.write_text(data["envoy.yaml"])
    if Path(CA).exists():
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", str(boot), "--log-level", "error"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_parse() -> None:
    kinds = set()
    for path in sorted((REPO / "deploy" / "kubernetes").glob("*.yaml")):
        if path.name == "proxy.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            kinds.add(doc["kind"])
    assert kinds == {"ConfigMap", "Deployment", "Secret", "Service"}
