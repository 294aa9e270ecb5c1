r"""Training-step benchmark: examples/s with LARS and with SGD-momentum.

For each model and global batch size (``--points``) and each loop ("jit",
"pmap"), the training step (experiments/steps.py) on synthetic data with
``lars_optax.lars`` and with ``optax.sgd(momentum)`` (+ weight decay) is
timed alternately, ``--steps`` times each after
``--warmup`` untimed steps: examples/s of both and the ratio of their median
step times. Why and what it found: docs/speed.md, "Training throughput". On a CPU:

  python -m experiments.benchmarks.benchmark_train \
      --output=experiments/results/benchmark_train_cpu.json

On an NVIDIA GPU, experiments/benchmarks/gpu_evidence.sh runs it on the
paper's models at ImageNet size (ResNet-50, AlexNet-BN) with bf16 compute.
"""
from __future__ import annotations

import json
import os
import statistics
import time

from absl import app
from absl import flags

from experiments.benchmarks import machine

FLAGS = flags.FLAGS
flags.DEFINE_list("points", [f"{model}:{batch}" for model in ("cnn", "resnet50_tiny")
                              for batch in (256, 1024, 4096)],
                  "MODEL:GLOBAL_BATCH_SIZE pairs (models: experiments.models).")
flags.DEFINE_list("loops", ["jit", "pmap"], "Loops to time.")
flags.DEFINE_integer("steps", 10, "Timed steps per optimizer and point.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (compilation).")
flags.DEFINE_string("dtype", "float32", "Compute dtype of the models (params stay float32).")
flags.DEFINE_integer("grad_accum_steps", 1,
                     "Micro-batches per optimizer step (the global batch is split).")
flags.DEFINE_string("output", None, "JSON file to write after every point (else print only).")

OPTIMIZERS = ("lars", "sgd")


def _config(model: str, loop: str, optimizer: str, batch: int, dtype: str,
            grad_accum_steps: int = 1):
  from experiments.configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.model = model
  config.loop = loop
  config.optimizer = optimizer
  config.global_batch_size = batch
  config.model_dtype = dtype
  config.grad_accum_steps = grad_accum_steps
  config.num_train_steps = 1000
  config.warmup_epochs = 0.1
  return config


def _setup(model, loop, optimizer, batch, dtype, grad_accum_steps=1):
  """The loop's compiled train step, its state and a batch on the devices."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from experiments import loops, models, optimizers  # pylint: disable=g-import-not-at-top
  from experiments.data.preparation import DatasetInfo  # pylint: disable=g-import-not-at-top
  shape = tuple(models.MODELS[model])
  info = DatasetInfo("synthetic", 100 * batch, batch, 1000, shape)
  config = _config(model, loop, optimizer, batch, dtype, grad_accum_steps)
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch=100)
  runner = loops.create_loop(config, info, schedule)
  state = runner.to_loop(runner.init_canonical_state())
  rng = np.random.default_rng(0)
  local = batch // jax.process_count()
  data = {"image": rng.normal(size=(local,) + shape).astype(np.float32),
          "label": rng.integers(0, 1000, size=(local,)).astype(np.int32)}
  # The loop's own layout of the batch, on the devices before timing starts.
  data = jax.device_put(runner.device_batch(data))
  return runner.compiled_train_step, state, data


def _step(train_step, state, data):
  import jax  # pylint: disable=g-import-not-at-top
  state, metrics = train_step(state, data)
  jax.block_until_ready((state, metrics))
  return state


def measure(model, loop, batch, steps, warmup, dtype, grad_accum_steps=1) -> dict:
  """Examples/s with each optimizer, stepped alternately, and the ratio."""
  point = {"model": model, "loop": loop, "global_batch_size": batch,
           "dtype": dtype}
  runs, warmup_s = {}, {}
  for name in OPTIMIZERS:
    t0 = time.perf_counter()
    train_step, state, data = _setup(model, loop, name, batch, dtype,
                                     grad_accum_steps)
    for _ in range(warmup):
      state = _step(train_step, state, data)
    warmup_s[name] = time.perf_counter() - t0
    runs[name] = [train_step, state, data]
  times = {name: [] for name in OPTIMIZERS}
  for i in range(steps):  # interleaved, alternating which goes first
    for name in OPTIMIZERS[::1 if i % 2 == 0 else -1]:
      train_step, state, data = runs[name]
      t = time.perf_counter()
      runs[name][1] = _step(train_step, state, data)
      times[name].append(time.perf_counter() - t)
  median = {name: statistics.median(t) for name, t in times.items()}
  point.update(
      {f"examples_per_sec_{name}": batch / median[name] for name in OPTIMIZERS})
  point.update(
      lars_over_sgd=median["lars"] / median["sgd"],
      median_step_s=median, step_times_s=times, setup_and_warmup_s=warmup_s)
  return point


def _point_or_out_of_memory(model, loop, batch) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  try:
    point = measure(model, loop, batch, FLAGS.steps, FLAGS.warmup, FLAGS.dtype,
                    FLAGS.grad_accum_steps)
  except jax.errors.JaxRuntimeError as error:
    if "RESOURCE_EXHAUSTED" not in str(error):
      raise
    print(f"{model:14s} {loop:4s} batch {batch:5d}: out of device memory", flush=True)
    return {"model": model, "loop": loop, "global_batch_size": batch,
            "dtype": FLAGS.dtype, "error": "out of device memory"}
  print(f"{model:14s} {loop:4s} batch {batch:5d}: examples/s LARS "
        f"{point['examples_per_sec_lars']:9.1f}, SGD-momentum "
        f"{point['examples_per_sec_sgd']:9.1f}; LARS/SGD step "
        f"{point['lars_over_sgd']:.3f}", flush=True)
  return point


def main(argv):
  del argv
  results = {"machine": machine.describe("jax", "flax", "optax", devices=True), "points": [],
             "command": "python -m experiments.benchmarks.benchmark_train " + " ".join(
                 f"--{name}={FLAGS[name].serialize().split('=', 1)[-1]}"
                 for name in ("points", "loops", "steps", "warmup", "dtype",
                              "grad_accum_steps")),
             "grad_accum_steps": FLAGS.grad_accum_steps}
  for model, batch in (point.split(":") for point in FLAGS.points):
    for loop in FLAGS.loops:
      results["points"].append(_point_or_out_of_memory(model, loop, int(batch)))
      results["machine"]["load_average_at_end"] = os.getloadavg()
      if FLAGS.output:  # after every point: a run cut short keeps what it measured
        os.makedirs(os.path.dirname(FLAGS.output) or ".", exist_ok=True)
        with open(FLAGS.output, "w") as f:
          json.dump(results, f, indent=2)
  if FLAGS.output:
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
