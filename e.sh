# Source this file before working:  source e.sh
# First use: builds the environment (conda env "ginlab" if conda is on PATH and that env exists,
# otherwise ./.venv with pip from requirements.txt). Later uses only activate it: sourcing again is instant.
# Exports PYTHONPATH (src/), DATA_DIR (default ./data) and RESULTS_DIR (default ./results).

_ginlab_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"

_ginlab_setup() {
    local root="$_ginlab_root"
    if command -v conda >/dev/null 2>&1 && conda env list 2>/dev/null | awk '{print $1}' | grep -qx ginlab; then
        [ "${CONDA_DEFAULT_ENV:-}" = ginlab ] || { eval "$(conda shell.bash hook)" && conda activate ginlab; } || return 1
    else
        local stamp="$root/.venv/.ginlab-requirements"
        # Rebuild only when requirements.txt changed since the last install (compared by content).
        if [ ! -x "$root/.venv/bin/python" ] || ! cmp -s "$root/requirements.txt" "$stamp"; then
            if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
                echo "e.sh: ginlab needs python3 >= 3.11 (found: $(python3 --version 2>&1)); install it, or put it first on PATH" >&2
                return 1
            fi
            echo "e.sh: installing the environment into $root/.venv (first use takes about 2 minutes)" >&2
            [ -x "$root/.venv/bin/python" ] || python3 -m venv "$root/.venv" || return 1
            "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/requirements.txt" || return 1
            "$root/.venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$root" || return 1
            cp "$root/requirements.txt" "$stamp"
        fi
        [ "${VIRTUAL_ENV:-}" = "$root/.venv" ] || . "$root/.venv/bin/activate" || return 1
    fi
    # The board's browser assets (bin/board.py): npm packages pinned in package-lock.json, installed once.
    if [ ! -d "$root/node_modules" ] && command -v npm >/dev/null 2>&1; then
        echo "e.sh: installing the board's browser assets into $root/node_modules (npm ci)" >&2
        (cd "$root" && npm ci --no-audit --no-fund --silent) || echo "e.sh: npm ci failed; bin/board.py needs it (run: npm ci)" >&2
    fi
    case ":${PYTHONPATH:-}:" in
        *":$root/src:"*) ;;
        *) export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}" ;;
    esac
    export DATA_DIR="${DATA_DIR:-$root/data}"
    export RESULTS_DIR="${RESULTS_DIR:-$root/results}"
}
_ginlab_setup
unset -f _ginlab_setup
