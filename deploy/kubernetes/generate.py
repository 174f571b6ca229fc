"""Regenerate each overlay's envoy.yaml from the proxy.yaml beside it.

    python deploy/kubernetes/generate.py          # rewrite overlays/*/envoy.yaml
    python deploy/kubernetes/generate.py --check  # exit 1 if one is stale

Each file is exactly what this command prints (run from the repository root)::

    python -m extproc envoy-config --config deploy/kubernetes/overlays/<name>/proxy.yaml \\
        --ca-file /etc/ssl/certs/ca-certificates.crt

with placeholder values for the secrets proxy.yaml references: the bootstrap never
contains a key, but the config must load. kustomize's configMapGenerator puts both files
into the llm-proxy-config ConfigMap; tests/deploy checks that they never drift apart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OVERLAYS = ("sidecar", "gateway")
#: The CA bundle inside the envoyproxy/envoy image (Ubuntu's ca-certificates).
CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
#: Values for the ${NAME} references without a default: the config must load, and the
#: bootstrap never contains them (tests/deploy checks that too).
PLACEHOLDER_ENV = {
    "PROXY_API_KEY": "placeholder-not-in-bootstrap",
    "OPENAI_API_KEY": "placeholder-not-in-bootstrap",
}


def envoy_config_command(overlay: str) -> list[str]:
    config = HERE.relative_to(REPO) / "overlays" / overlay / "proxy.yaml"
    return [
        sys.executable,
        "-m",
        "extproc",
        "envoy-config",
        "--config",
        str(config),
        "--ca-file",
        CA_FILE,
    ]


def render(overlay: str) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **PLACEHOLDER_ENV}
    result = subprocess.run(
        envoy_config_command(overlay),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{overlay}: envoy-config failed:\n{result.stderr}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only report stale files")
    args = parser.parse_args(argv)
    stale = []
    for overlay in OVERLAYS:
        path = HERE / "overlays" / overlay / "envoy.yaml"
        fresh = render(overlay)
        if path.exists() and path.read_text() == fresh:
            continue
        if args.check:
            stale.append(str(path.relative_to(REPO)))
        else:
            path.write_text(fresh)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("stale (run python deploy/kubernetes/generate.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
