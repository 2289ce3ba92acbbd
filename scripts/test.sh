#!/bin/sh
# The test command: lint (ruff), types (mypy --strict), the layer contract (import-linter),
# then the test suite on 2 workers.
# Extra arguments go to pytest, e.g. scripts/test.sh -k corpus
set -eu
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest -n 2 "$@"
