# Sourced by ./stepflow-stream and scripts/test: creates .venv and installs the
# project on first use, and again whenever pyproject.toml changes.
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
extras="${STEPFLOW_EXTRAS:-dev}"
stamp="$venv/.installed-$extras"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" >&2
fi
if [ ! -f "$stamp" ] || [ "$repo_root/pyproject.toml" -nt "$stamp" ]; then
    echo "installing stepflow-stream[$extras] into $venv ..." >&2
    log="$venv/install.log"
    if ! { "$venv/bin/python" -m pip install --upgrade pip setuptools wheel &&
           "$venv/bin/python" -m pip install -e "$repo_root[$extras]"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "error: installing stepflow-stream failed (log above, also in $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
