r"""Training-step benchmark: examples/s per loop and batch size, LARS vs SGD.

On synthetic data (random images of the model's input shape), with the real
training step (experiments/steps.py, compiled by the loops of
experiments/loops.py: forward, backward, optimizer update, metrics), so it
measures what training pays, without the input pipeline.

1. Throughput: for each model, loop ("jit", "pmap") and global batch size,
   examples per second over `--steps` steps after `--warmup` steps (compile).
2. LARS vs SGD-momentum: one training step of the same model and batch with
   ``lars_optax.lars`` and with ``optax.sgd(momentum)`` (+ weight decay), timed
   alternately (interleaved) `--repeats` times; medians and their ratio.

CPU (the committed numbers; this machine's 2 cores are shared, so the load
average is recorded next to them):

  python -m experiments.benchmark_train \
      --output=experiments/results/benchmark_train_cpu.json

GPU, the paper's models at ImageNet size:

  python -m experiments.benchmark_train --models=resnet50,alexnet_bn \
      --batch_sizes=256,512,1024,2048,4096 --loops=jit --compare_batch=256 \
      --output=experiments/results/benchmark_train_gpu.json
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["cnn", "resnet50_tiny"], "Model names (experiments.models).")
flags.DEFINE_list("batch_sizes", ["256", "1024", "4096"], "Global batch sizes.")
flags.DEFINE_list("loops", ["jit", "pmap"], "Loops to time.")
flags.DEFINE_integer("steps", 3, "Timed steps per throughput point.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (compilation).")
flags.DEFINE_integer("compare_batch", 1024, "Batch of the LARS vs SGD timing.")
flags.DEFINE_list("compare_models", None,
                  "Models of the LARS vs SGD timing (default: --models).")
flags.DEFINE_integer("repeats", 15, "Interleaved LARS/SGD step pairs.")
flags.DEFINE_string("dtype", "float32", "Compute dtype of the models.")
flags.DEFINE_string("output", None, "JSON file to write (else print only).")


def machine_description() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          cpu = line.split(":", 1)[1].strip()
          break
  except OSError:
    pass
  device = jax.devices()[0]
  return {
      "platform": device.platform,
      "device_kind": device.device_kind,
      "num_devices": jax.device_count(),
      "cpu": cpu,
      "cpu_count": os.cpu_count(),
      "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
      "jax": jax.__version__,
      "python": platform.python_version(),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


def _config(model: str, loop: str, optimizer: str, batch: int, dtype: str):
  from experiments.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model = model
  config.loop = loop
  config.optimizer = optimizer
  config.global_batch_size = batch
  config.model_dtype = dtype
  config.num_train_steps = 1000
  config.warmup_epochs = 0.1
  return config


def _setup(model, loop, optimizer, batch, dtype):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments import datasets, loops, models, optimizers  # pylint: disable=g-import-not-at-top
  shape = tuple(models.MODELS[model])
  info = datasets.DatasetInfo("synthetic", 100 * batch, batch, 1000, shape)
  config = _config(model, loop, optimizer, batch, dtype)
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=100)
  runner = loops.create_loop(config, info, schedule)
  state = runner.to_loop(runner.init_canonical_state())
  rng = np.random.default_rng(0)
  local = batch // _process_count()
  data = {"image": rng.normal(size=(local,) + shape).astype(np.float32),
          "label": rng.integers(0, 1000, size=(local,)).astype(np.int32)}
  return runner, state, data


def _process_count():
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_count()


def _step(runner, state, data):
  import jax  # pylint: disable=g-import-not-at-top
  state, metrics = runner.train_step(state, data)
  jax.block_until_ready((state, metrics))
  return state


def throughput(model, loop, batch, steps, warmup, dtype) -> dict:
  runner, state, data = _setup(model, loop, "lars", batch, dtype)
  t0 = time.perf_counter()
  for _ in range(warmup):
    state = _step(runner, state, data)
  compile_and_warmup = time.perf_counter() - t0
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state = _step(runner, state, data)
    times.append(time.perf_counter() - t)
  median = statistics.median(times)
  return {"model": model, "loop": loop, "global_batch_size": batch,
          "optimizer": "lars", "median_step_s": median,
          "examples_per_sec": batch / median, "step_times_s": times,
          "warmup_s": compile_and_warmup}


def lars_vs_sgd(model, batch, repeats, warmup, dtype) -> dict:
  lars_runner, lars_state, data = _setup(model, "jit", "lars", batch, dtype)
  sgd_runner, sgd_state, _ = _setup(model, "jit", "sgd", batch, dtype)
  for _ in range(warmup):
    lars_state = _step(lars_runner, lars_state, data)
    sgd_state = _step(sgd_runner, sgd_state, data)
  lars_times, sgd_times = [], []
  for i in range(repeats):  # interleaved, alternating which goes first
    order = ("lars", "sgd") if i % 2 == 0 else ("sgd", "lars")
    for which in order:
      t = time.perf_counter()
      if which == "lars":
        lars_state = _step(lars_runner, lars_state, data)
        lars_times.append(time.perf_counter() - t)
      else:
        sgd_state = _step(sgd_runner, sgd_state, data)
        sgd_times.append(time.perf_counter() - t)
  lars_median = statistics.median(lars_times)
  sgd_median = statistics.median(sgd_times)
  return {"model": model, "global_batch_size": batch, "loop": "jit",
          "lars_median_step_s": lars_median, "sgd_momentum_median_step_s": sgd_median,
          "lars_over_sgd": lars_median / sgd_median,
          "lars_step_times_s": lars_times, "sgd_step_times_s": sgd_times}


def main(argv):
  del argv
  results = {"machine": machine_description(), "throughput": [], "lars_vs_sgd": [],
             "command": "python -m experiments.benchmark_train " + " ".join(
                 f"--{name}={FLAGS[name].serialize().split('=', 1)[-1]}"
                 for name in ("models", "batch_sizes", "loops", "steps", "warmup",
                              "compare_batch", "repeats", "dtype"))}
  for model in FLAGS.models:
    for loop in FLAGS.loops:
      for batch in map(int, FLAGS.batch_sizes):
        point = throughput(model, loop, batch, FLAGS.steps, FLAGS.warmup, FLAGS.dtype)
        print(f"{model:16s} {loop:4s} batch {batch:6d}: "
              f"{point['examples_per_sec']:10.1f} examples/s "
              f"(median step {point['median_step_s'] * 1e3:.1f} ms)", flush=True)
        results["throughput"].append(point)
  for model in FLAGS.compare_models or FLAGS.models:
    point = lars_vs_sgd(model, FLAGS.compare_batch, FLAGS.repeats, FLAGS.warmup,
                        FLAGS.dtype)
    print(f"{model:16s} batch {FLAGS.compare_batch}: LARS step "
          f"{point['lars_median_step_s'] * 1e3:.1f} ms, SGD-momentum step "
          f"{point['sgd_momentum_median_step_s'] * 1e3:.1f} ms, ratio "
          f"{point['lars_over_sgd']:.3f}", flush=True)
    results["lars_vs_sgd"].append(point)
  results["machine"]["load_average_at_end"] = (
      os.getloadavg() if hasattr(os, "getloadavg") else None)
  if FLAGS.output:
    os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
    with open(FLAGS.output, "w") as f:
      json.dump(results, f, indent=2)
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
