"""Committed deployment files stay what the generators produce.

The Kubernetes manifests (deploy/kubernetes) are checked in tests/deploy/test_kubernetes.py.
"""

from __future__ import annotations

import subprocess
import sys

from tests.harness import REPO

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


def test_image_user_is_new_on_debian() -> None:
    """The Dockerfile's ``useradd`` must not name a user Debian already has.

    python:3.11-slim is Debian; Debian ships a ``proxy`` user (uid 13), so
    ``useradd proxy`` failed the image build. This machine is Debian too: its
    /etc/passwd has the base system's users.
    """
    import re
    from pathlib import Path

    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    found = re.search(
        r"useradd\b[^\n]*?--uid (\d+)[^\n]*?\s([a-z][a-z0-9_-]*)\s*$", dockerfile, re.M
    )
    assert found, "the Dockerfile should create its own user"
    uid, name = found.groups()
    passwd = Path("/etc/passwd").read_text().splitlines()
    names = {line.split(":")[0] for line in passwd}
    uids = {line.split(":")[2] for line in passwd}
    assert "proxy" in names  # Debian's base system: the clash this test is about
    assert name not in names and uid not in uids
    assert f"USER {uid}" in dockerfile
