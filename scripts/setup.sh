#!/bin/sh
# Set up previewer on Debian/Ubuntu: system packages, a project virtual environment in .venv
# with the locked Python dependencies (requirements.lock, generated from pyproject.toml), and
# previewer itself installed into it. Safe to run again; it only adds what is missing.
#
#   scripts/setup.sh            libraries and tools previewer and its tests need
#   scripts/setup.sh --bench    also the peer tools the benchmark compares with
set -eu

cd "$(dirname "$0")/.."

BENCH=0
for arg in "$@"; do
    case "$arg" in
        --bench) BENCH=1 ;;
        *) echo "usage: scripts/setup.sh [--bench]" >&2; exit 2 ;;
    esac
done

# python3-venv: the virtual environment; libmagic1: content sniffing (python-magic).
PACKAGES="python3 python3-venv libmagic1"
if [ "$BENCH" = 1 ]; then
    PACKAGES="$PACKAGES mupdf-tools poppler-utils imagemagick libvips-tools"
fi

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "setup: installing system packages:$missing" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "setup: ready; run .venv/bin/previewer --help" >&2
