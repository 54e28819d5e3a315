#!/usr/bin/env bash
# Set up pqflow for development: .venv with pinned CPU torch, pqflow (editable) with its
# extras, and the Icarus simulator. Idempotent: a stamp keyed on a hash of
# pyproject.toml and this script makes a second run take well under a second.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.pqflow-setup-stamp"
TORCH="torch==2.13.0"   # pinned: an unpinned torch pulls a multi-GB CUDA build
EXTRAS="models,hw,hls,onnx,report,explore,dev"

LOG="$VENV/setup.log"

say() { printf 'setup: %s\n' "$*"; }

# Run a command with its output in $LOG; on failure show the log's tail and stop.
quiet() {
    if ! "$@" >>"$LOG" 2>&1; then
        say "FAILED: $*"
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

hash_inputs() {
    cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1
}

# apt-get install PACKAGE, as root or through sudo; `apt-get update` runs once per setup.
APT_UPDATED=""
apt_install() {
    local SUDO=""
    if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    if [ -z "$APT_UPDATED" ]; then
        $SUDO apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

# 1. Icarus Verilog (checked on every run: it lives outside the venv).
if ! command -v iverilog >/dev/null 2>&1; then
    say "installing iverilog (apt-get)"
    if apt_install iverilog; then
        say "iverilog $(iverilog -V 2>&1 | head -n1 | sed 's/^Icarus Verilog version //')"
    else
        say "WARNING: could not install iverilog; Icarus tests will be skipped" \
            "(install it with: apt-get install iverilog)"
    fi
fi

# 1b. Chromium, headless (checked on every run): the report tests render the HTML in it.
if ! command -v chromium >/dev/null 2>&1; then
    say "installing chromium (apt-get)"
    if apt_install chromium; then
        say "$(chromium --version 2>/dev/null | head -n1)"
    else
        say "WARNING: could not install chromium; the HTML report rendering test will be" \
            "skipped (install it with: apt-get install chromium)"
    fi
fi

# 2. Python environment (skipped when pyproject.toml and this script are unchanged).
WANT="$(hash_inputs)"
if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    say "environment up to date ($VENV)"
    exit 0
fi

if [ ! -x "$PY" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
fi
: >"$LOG"
PIP=("$PY" -m pip --disable-pip-version-check)
say "upgrading pip (log: $LOG)"
quiet "${PIP[@]}" install --upgrade pip
say "installing $TORCH (CPU)"
quiet "${PIP[@]}" install "$TORCH"
say "installing pqflow[$EXTRAS] (editable)"
quiet "${PIP[@]}" install -e ".[$EXTRAS]"
"$PY" - <<'PY'
from pqflow.sim.tools import SimulatorNotFound, find_simulator, simulator_version

for name in ("verilator", "icarus"):
    try:
        find_simulator(name)
        print(f"setup: {name} {simulator_version(name)}")
    except SimulatorNotFound as exc:
        print(f"setup: WARNING: {exc}")
PY
echo "$WANT" > "$STAMP"
say "done"
