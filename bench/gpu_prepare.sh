#!/usr/bin/env bash
# Here, before a GPU session's first call: fill .carry/ (git-ignored; name it in the device
# tool's `carry`) with what bench/gpu_suite.sh needs on the GPU machine, which has no network:
# the data set, and Kornia for its Python 3.12 (the image holds PyTorch, NumPy, Pillow, Rich,
# Typer, matplotlib and OpenCV, but not Kornia). Kornia's compiled half is stripped and both are
# packed with xz, since the zip alone is 53 MiB of the 64 MiB that may travel with a call.
#
#   bash bench/gpu_prepare.sh                   # DATA: ../shared/datasets/fer2013.zip
#   bash bench/gpu_prepare.sh path/to/fer2013.zip
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/datasets/fer2013.zip}
limit=$((64 * 1024 * 1024))
py=${PYTHON:-.venv/bin/python}
# the versions this checkout is tested with
versions=$("$py" -c "from importlib.metadata import version as v; print(v('kornia'), v('kornia_rs'))")
read -r kornia kornia_rs <<< "$versions"
mkdir -p .carry
cp -f "$data" .carry/fer2013.zip
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$tmp/wheels" "kornia==$kornia" "kornia_rs==$kornia_rs"
mkdir "$tmp/site"
for wheel in "$tmp"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$tmp/site"; done
find "$tmp/site" -name '*.so' -exec strip --strip-unneeded {} +
tar cf - -C "$tmp/site" . | xz -9 -T1 > .carry/site-py312.tar.xz
# what travels: tracked files, untracked ones git does not ignore, and .carry
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 -r du -cb \
  | tail -n 1 | cut -f1)
carry=$(du -cb .carry/* | tail -n 1 | cut -f1)
echo "kornia $kornia + kornia_rs $kornia_rs for Python 3.12 in .carry/site-py312.tar.xz"
echo "travels: working tree $((tree / 1024)) KiB + .carry $((carry / 1024)) KiB" \
  "of $((limit / 1024)) KiB"
if (( tree + carry > limit )); then
  echo "too large for the device tool: remove untracked files or shrink .carry" >&2
  exit 1
fi
