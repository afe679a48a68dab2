#!/usr/bin/env bash
# The GPU checks in one run, for a GPU machine that may be offline: the tests that
# compare every stage on the GPU with the CPU (tests/test_gpu.py), then the scale
# benchmark of the 7B shape and of SmolLM2's shape (random weights: no model file
# needed) on the GPU, each under a time limit: under 10 minutes in all.
#
#   bash benchmarks/gpu_checks.sh --fetch   # on a machine with PyPI: wheels into .whl/
#   bash benchmarks/gpu_checks.sh [OUT]     # on the GPU machine, from the repository root
#
# The second form installs the wheels of .whl/ (if any) into /tmp/site without their
# dependencies (the machine's own torch, transformers, numpy... are used), and writes
# the test log and the benchmark's CSV and summary into OUT (default
# benchmarks/results/scale).
set -uo pipefail
cd "$(dirname "$0")/.."

# what llmbrain needs beyond a CUDA PyTorch image (torch, transformers, accelerate,
# numpy, scipy, scikit-learn, pandas, xarray, matplotlib, tqdm, filelock)
WHEELS="nilearn nibabel zarr numcodecs donfig google-crc32c"

if [ "${1:-}" = "--fetch" ]; then
    python3 -m pip download --no-deps --only-binary=:all: \
        --python-version "${PYTHON_VERSION:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $WHEELS
    exit
fi

out="${1:-benchmarks/results/scale}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'cuda', torch.cuda.is_available())" || exit 1

timeout 150 python3 -m pytest -q -p no:cacheprovider -W ignore::UserWarning \
    tests/test_gpu.py tests/test_moments.py 2>&1 | tee "$out/gpu-tests.txt"
timeout 420 python3 benchmarks/bench_scale.py --device cuda --models 7b,smollm2-shaped \
    --repeats 2 --store-gb 5 --tmp /tmp --out "$out"
