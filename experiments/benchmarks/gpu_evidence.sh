#!/usr/bin/env bash
# The GPU evidence in one command, run from the repository root on an NVIDIA
# GPU machine with JAX for CUDA: correctness there, the optimizer step, and
# training throughput, on synthetic data (no dataset needed).
#
#   OUT=runs/gpu_evidence bash experiments/benchmarks/gpu_evidence.sh [STAGES]
#
# The machine needs JAX, Flax, optax, orbax, chex, pytest and hypothesis, and
# the pure-Python ml_collections (the configs). Where ml_collections is
# missing and there is no network, put its wheel in .whl/ first (made on any
# machine with pip):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp -d .whl ml_collections==1.1.0
#
# Stages (default: all four, in this order), sized to end within about ten
# minutes on one GPU: `check` (the device, the library's tests and the loops'
# equivalence with one device), `step` (benchmark_lars.py on the ResNet-50
# tree, with a jax.profiler trace) and `train` (benchmarks/benchmark_train.py,
# bf16 compute, most valuable points first; it writes its JSON after every
# point, so a run cut short keeps what it measured; POINTS=MODEL:BATCH,...
# replaces its points, e.g. for a dry run on a CPU with JAX_PLATFORMS=cpu) and
# `accum` (ResNet-50 at global batch 1024 as 4 accumulated micro-batches of
# 256, against the train stage's resnet50:256; ACCUM_POINTS replaces it).
# Everything goes to $OUT (default runs/gpu_evidence): device.txt, tests.log,
# benchmark_lars_gpu.json, profile.tgz, benchmark_train_gpu.json,
# benchmark_train_accum_gpu.json and the logs.
set -uo pipefail
out=${OUT:-runs/gpu_evidence}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
if ! python3 -c "import ml_collections" 2> /dev/null; then
  if ! compgen -G ".whl/*.whl" > /dev/null; then
    echo "error: ml_collections is missing and .whl/ holds no wheel of it;" \
      "see the top of $0" >&2
    exit 2
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
points=${POINTS:-resnet50:256,resnet50:1024,resnet50:4096,alexnet_bn:512,\
alexnet_bn:4096,resnet50:512,resnet50:2048}

for stage in ${*:-check step train accum}; do
  echo "== $stage ($(date -u +%T))"
  case $stage in
    check)
      { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        python3 -c "import jax, flax, optax; print('jax', jax.__version__, \
'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
      } 2>&1 | tee "$out/device.txt"
      # A newer stack's deprecation notices are reported, not failures, here.
      python3 -m pytest -q -p no:cacheprovider -W default::DeprecationWarning \
        tests/test_lars.py tests/test_numerics.py tests/test_masks.py \
        tests/test_schedules.py tests/test_diagnostics.py tests/test_loops.py \
        > "$out/tests.log" 2>&1
      tail -n 12 "$out/tests.log" ;;
    step)
      rm -rf /tmp/profile
      # One compilation per optimizer for its compile time: this stage is
      # about step times, and GPU compilations are slow.
      python3 -m experiments.benchmarks.benchmark_lars --rounds 30 --compile-repeats 1 \
        --trees resnet50 --profile_dir /tmp/profile --output "$out/benchmark_lars_gpu.json" \
        2>&1 | tee "$out/benchmark_lars.log"
      tar -czf "$out/profile.tgz" -C /tmp profile ;;
    train)
      python3 -m experiments.benchmarks.benchmark_train --loops=jit --dtype=bfloat16 \
        --points="$points" \
        --output="$out/benchmark_train_gpu.json" 2>&1 | tee "$out/benchmark_train.log" ;;
    accum)
      python3 -m experiments.benchmarks.benchmark_train --loops=jit --dtype=bfloat16 \
        --points="${ACCUM_POINTS:-resnet50:1024}" --grad_accum_steps=4 \
        --output="$out/benchmark_train_accum_gpu.json" 2>&1 \
        | tee -a "$out/benchmark_train.log" ;;
    *) echo "unknown stage '$stage'; stages: check step train accum" >&2; exit 2 ;;
  esac
done
