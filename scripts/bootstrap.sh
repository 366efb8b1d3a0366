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
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet -e "$repo_root[$extras]" >&2
    touch "$stamp"
fi
