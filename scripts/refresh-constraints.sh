#!/usr/bin/env bash
# Re-resolve constraints/ci.txt from the newest releases pyproject.toml allows, and keep it only if
# lint and the whole test suite pass with them. CI (scripts/test.sh) installs with these pins, so
# a new release of a dependency cannot turn main red overnight; this script is how to move on.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0 -e ".[test,serve,sweep,sweep-postgres,transfer,onnx]"  # no -c: newest
"$venv/bin/ruff" check src tests bench
"$venv/bin/python" -m pytest -q
{
  echo "# Known-good versions for CI (scripts/test.sh installs with -c this file); users install from"
  echo "# pyproject.toml's ranges. Refresh: bash scripts/refresh-constraints.sh (see README, Development)."
  "$venv/bin/pip" freeze --exclude-editable | grep -v '^-e ' | sed -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/'
} > constraints/ci.txt
echo "constraints/ci.txt refreshed; review 'git diff constraints/ci.txt' and commit it"
