#!/usr/bin/env bash
# Create (or reuse) the local virtual environment .venv with the pinned requirements.
# Idempotent: a stamp file records the hash of the requirement files and pyproject.toml, so a second
# call is instant.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  echo "usage: bash scripts/setup_env.sh   (PYTHON=python3.11 VENV=.venv to choose)"
  echo
  sed -n '2,/^set -/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
  exit 0
fi
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt requirements-embedded.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# Bytecode is compiled by compileall on every core, beside the installs (pip compiles file by file on one
# core, after unpacking on one core: that was most of the install's time). Packages' own test folders are
# never imported. A file that does not compile (pip skips those too) is imported by nothing here, so
# compileall's status is not the install's.
pip_install=("$VENV/bin/python" -m pip install --quiet --no-compile)
site_packages=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
compile() { "$VENV/bin/python" -m compileall -qq -j 0 -x '/tests/' "$@" || true; }
# torch first, pinned: a plain `torch` requirement resolved by another package could pull a CUDA build.
"${pip_install[@]}" "$(grep -E '^torch==' requirements.txt)"
compile "$site_packages/torch" & torch_compiled=$!
"${pip_install[@]}" -r requirements.txt
wait "$torch_compiled"
compile "$site_packages" & compiled=$!  # skips what is compiled already (torch)
"${pip_install[@]}" --no-deps -r requirements-embedded.txt
# This checkout's package, editable: `import balora` and the balora-* commands work from any folder
# (python eval/gsm8k.py, benchmarks/*.py, a notebook), and edits take effect without reinstalling.
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation --editable .
wait "$compiled"
compile "$site_packages"  # the embedded packages, installed meanwhile
echo "$want" > "$stamp"
