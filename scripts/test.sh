#!/usr/bin/env bash
# Everything the test suite needs on a fresh clone, then lint and tests. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-browser.sh  # Debian chromium for the browser test (no-op if present or not root)
bash scripts/install-postgres.sh  # PostgreSQL server binaries for the sweep test (same rules)
python3 -m venv .venv
.venv/bin/pip install -q -c constraints/ci.txt torch==2.13.0 -e ".[test,serve,sweep,sweep-postgres,transfer,onnx,docs]"
.venv/bin/ruff check src tests bench scripts
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"  # a broken link or page fails
.venv/bin/python -m pytest -q
