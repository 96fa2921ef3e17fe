#!/usr/bin/env bash
# One prepared run of the GPU backend on a CUDA machine (the device tool's nvidia-h200:
# Python 3.12 with its own torch and triton, no network, no gmpy2). It
#   1. installs gmpy2 from a carried wheel and adamconf itself without dependencies,
#   2. runs the GPU tests on the device (gpu-nofma equal to the numpy backend bit for bit,
#      bfloat16 rounding, declarations, sparse, the PTX),
#   3. runs the ci gate on every TF variant and dtype: adamconf check --backend gpu --profile ci,
#   4. times one float32 step at 2^24 and 2^28 elements against torch's fused Adam and the
#      copy floor, and compares the device's results with the numpy backend's.
# Reports land in $OUT (results.json, report.md, junit.xml, log).
#
# Before the call, once, in the repository root of the checkout that travels:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d build/wheels gmpy2==2.3.2
# (build/ is ignored by git) and call the device tool with carry ["build/wheels"],
# timeout_s 600, command: bash benchmarks/gpu_device_run.sh
set -uo pipefail
OUT="${OUT:-/tmp/adamconf-gpu}"
mkdir -p "$OUT"
exec > >(tee "$OUT/log") 2>&1
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site build/wheels/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"

echo "== tests (device part)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu_backend.py -k "not ci_gate"
echo "== ci gate"
start=$(date +%s)
timeout 360 python3 -m adamconf check --backend gpu --profile ci --quiet --out "$OUT"
echo "gate exit $? in $(( $(date +%s) - start )) s"
echo "== benchmark"
timeout 120 python3 benchmarks/bench_gpu_step.py --compare
