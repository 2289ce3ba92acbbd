#!/bin/sh
# The test command: lint (ruff), types (mypy --strict), then the test suite on 2 workers.
# Extra arguments go to pytest, e.g. scripts/test.sh -k corpus
set -eu
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest -n 2 "$@"
