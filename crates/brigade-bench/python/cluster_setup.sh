#!/usr/bin/env bash
# The cluster suite's Python anchors, installed from the package index into two virtual
# environments under $1 (Celery's Redis transport needs redis-py >= 6.1 and `packaging`;
# RQ gets its own environment). Idempotent: an environment that imports is left alone.
set -euo pipefail
dir=${1:?usage: cluster_setup.sh VENV_DIR}
mkdir -p "$dir"

make_env() {
    local name=$1 check=$2
    shift 2
    if [ -x "$dir/$name/bin/python" ] && "$dir/$name/bin/python" -c "$check" 2>/dev/null; then
        return
    fi
    rm -rf "$dir/$name"
    python3 -m venv "$dir/$name"
    "$dir/$name/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    "$dir/$name/bin/python" -c "$check"
}

make_env celery "import celery, redis, packaging" "celery[redis]>=5.3" "redis>=6.1" packaging
make_env rq "import rq, redis" rq
