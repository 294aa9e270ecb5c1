"""Speed of one LARS (and LAMB) step on a ResNet-50-shaped and a deep transformer-shaped tree.

Times one jitted, donated optimizer step (update + apply_updates) of
lars_optax.lars, optax.lars, a minimal plain-jnp LARS, lars_optax.lamb,
optax.lamb, optax.sgd(momentum=0.9) and a plain ``p - lr * g`` step, and
writes the medians over interleaved rounds, compile times, bandwidth against
the memory floor, the kernels of each step and the machine to a JSON.
``--profile_dir`` also writes a jax.profiler trace of a few steps of ours.
What it measures and why: docs/speed.md, "The optimizer step".

    python -m experiments.benchmarks.benchmark_lars            # CPU, writes the JSON
    python -m experiments.benchmarks.benchmark_lars --rounds 30 --output out.json

On a GPU, experiments/benchmarks/gpu_evidence.sh runs it on the ResNet-50 tree with a
profile.
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lars_optax

from experiments.benchmarks import machine

# Bytes moved per parameter (float32): LARS reads w, g for the norms (8), then
# reads w, g, v and writes w, v (20).
LARS_BYTES_PER_PARAM = 28


def resnet50_shapes(num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
  """Shapes of ResNet-50's parameters (HWIO kernels, BN scale/bias, fc)."""
  shapes = {}

  def conv_bn(name, kh, cin, cout):
    shapes[f"{name}/conv/kernel"] = (kh, kh, cin, cout)
    shapes[f"{name}/bn/scale"] = (cout,)
    shapes[f"{name}/bn/bias"] = (cout,)

  conv_bn("stem", 7, 3, 64)
  cin = 64
  for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
    for block in range(blocks):
      name = f"stage{stage + 1}/block{block + 1}"
      conv_bn(f"{name}/conv1", 1, cin, width)
      conv_bn(f"{name}/conv2", 3, width, width)
      conv_bn(f"{name}/conv3", 1, width, 4 * width)
      if block == 0:
        conv_bn(f"{name}/projection", 1, cin, 4 * width)
      cin = 4 * width
  shapes["fc/kernel"] = (cin, num_classes)
  shapes["fc/bias"] = (num_classes,)
  return shapes


def transformer_shapes(num_blocks: int = 64, width: int = 128,
                       mlp_width: int = 512, vocab: int = 1024
                       ) -> dict[str, tuple[int, ...]]:
  """A pre-LN transformer with unscanned blocks: 16 leaves per block."""
  shapes = {"embed/embedding": (vocab, width)}
  for block in range(num_blocks):
    name = f"block{block}"
    for norm in ("ln1", "ln2"):
      shapes[f"{name}/{norm}/scale"] = (width,)
      shapes[f"{name}/{norm}/bias"] = (width,)
    for projection in ("query", "key", "value", "out"):
      shapes[f"{name}/attention/{projection}/kernel"] = (width, width)
      shapes[f"{name}/attention/{projection}/bias"] = (width,)
    shapes[f"{name}/mlp/in/kernel"] = (width, mlp_width)
    shapes[f"{name}/mlp/in/bias"] = (mlp_width,)
    shapes[f"{name}/mlp/out/kernel"] = (mlp_width, width)
    shapes[f"{name}/mlp/out/bias"] = (width,)
  shapes["final_ln/scale"] = (width,)
  shapes["final_ln/bias"] = (width,)
  shapes["head/kernel"] = (width, vocab)
  shapes["head/bias"] = (vocab,)
  return shapes


TREES = {"resnet50": resnet50_shapes, "transformer": transformer_shapes}


def make_tree(shapes, seed):
  rng = np.random.default_rng(seed)
  return {
      name: jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * 0.05)
      for name, shape in shapes.items()
  }


def minimal_lars(learning_rate, weight_decay, momentum, trust_coefficient=0.001):
  """The least a LARS step does, in plain jnp: the floor for any LARS here.

  Algorithm 1 with nothing else (no masks, no float32 upcast, no overflow
  rescue, no diagnostics). Not part of the library: a speed reference only.
  """

  def new_momentum(g, w, v):
    w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
    ratio = jnp.where((w_norm > 0) & (g_norm > 0), trust_coefficient * w_norm
                      / (g_norm + weight_decay * w_norm), 1.0)
    return momentum * v + learning_rate * ratio * (g + weight_decay * w)

  def update(grads, v, params):
    v = jax.tree.map(new_momentum, grads, params, v)
    return jax.tree.map(jnp.negative, v), v

  return optax.GradientTransformation(
      lambda params: jax.tree.map(jnp.zeros_like, params), update)


def optimizers(learning_rate=0.1):
  return {
      "lars_optax": lars_optax.lars(learning_rate, weight_decay=1e-4, momentum=0.9),
      "optax_lars": optax.lars(learning_rate, weight_decay=1e-4, momentum=0.9),
      "lars_minimal": minimal_lars(learning_rate, weight_decay=1e-4, momentum=0.9),
      "sgd_momentum": optax.sgd(learning_rate, momentum=0.9),
      "lars_optax_lamb": lars_optax.lamb(1e-3 * learning_rate, weight_decay=1e-2),
      "optax_lamb": optax.lamb(1e-3 * learning_rate, weight_decay=1e-2),
  }


def make_step(tx):
  """One jitted, donated step: update + apply_updates (params, state donated)."""
  if tx is None:  # plain p - lr * g

    def plain(params, state, grads):
      return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), state

    return jax.jit(plain, donate_argnums=(0, 1))

  def step(params, state, grads):
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1))


def compile_seconds(shapes, grads, names, repeats):
  """Median wall time of trace + lower + compile, over fresh programs.

  Each repeat uses a slightly different learning rate so that no cache
  (tracing or XLA compilation) can serve it; the optimizers are interleaved
  so that load on the machine affects them alike.
  """
  params = make_tree(shapes, seed=0)
  times = {}
  for repeat in range(repeats):
    txs = optimizers(0.1 + 1e-6 * (repeat + 1))
    for name in names:
      step = make_step(txs[name])
      state = txs[name].init(params)
      t0 = time.perf_counter()
      step.lower(params, state, grads).compile()
      times.setdefault(name, []).append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}


def step_milliseconds(shapes, grads, names, rounds, warmup, profile_dir=None):
  """Per-round step times (ms) of each optimizer, interleaved, and what each
  compiled step launches (``kernels``)."""
  txs = dict(optimizers(), plain=None)
  steps, carries = {}, {}
  for name in names:
    params = make_tree(shapes, seed=0)
    state = txs[name].init(params) if txs[name] is not None else ()
    steps[name] = make_step(txs[name]).lower(params, state, grads).compile()
    for _ in range(warmup):
      params, state = steps[name](params, state, grads)
    jax.block_until_ready(params)
    carries[name] = (params, state)
  times = {name: [] for name in names}
  for r in range(rounds):
    # One run of each per round, in an order rotated every round so that each
    # step follows every other equally often (a step timed right after
    # optax.lars's memory traffic runs slower).
    for name in names[r % len(names):] + names[:r % len(names)]:
      params, state = carries[name]
      t0 = time.perf_counter()
      params, state = steps[name](params, state, grads)
      jax.block_until_ready((params, state))
      times[name].append(1e3 * (time.perf_counter() - t0))
      carries[name] = (params, state)
  if profile_dir:
    params, state = carries["lars_optax"]
    with jax.profiler.trace(profile_dir):
      for _ in range(5):
        params, state = steps["lars_optax"](params, state, grads)
      jax.block_until_ready((params, state))
  return times, {name: kernels(step) for name, step in steps.items()}


# Top-level ops of a compiled program that launch nothing on the device.
NOT_KERNELS = frozenset({"parameter", "constant", "tuple", "get-tuple-element",
                         "bitcast"})
# Ops that move data between host and device inside a step.
HOST_TRANSFER = re.compile(r"\b(send|recv|infeed|outfeed)(-done|-start)?\b|"
                           r"custom_call_target=\"[^\"]*callback")
# Ops whose control flow the GPU runtime may decide on the host (the
# predicate or loop condition is copied back), stalling the stream.
HOST_SYNC = frozenset({"conditional", "while"})
# An instruction's opcode: the first ``name(`` after ``%x = <shape>``.
OPCODE = re.compile(r" = .*?([a-z][a-z0-9-]*)\(")


def kernels(compiled) -> dict[str, int]:
  """What one step of a compiled program launches, read from its entry
  computation (XLA runs each top-level fusion, library call or copy as one
  kernel on a GPU), how many of its ops transfer to or from the host, and how
  many are control flow that may wait for the host."""
  text = compiled.as_text()
  entry = text[text.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  lines = entry.splitlines()[1:]
  ops = [m.group(1) for m in map(OPCODE.search, lines) if m]
  return {"kernels": sum(op not in NOT_KERNELS for op in ops),
          "host_transfers": sum(map(bool, map(HOST_TRANSFER.search, lines))),
          "host_synchronizations": sum(op in HOST_SYNC for op in ops)}


def copy_bandwidth(num_params: int, rounds: int) -> float:
  """Bytes/s of a donated read+write pass over num_params float32 values."""
  f = jax.jit(lambda x: x * 1.000001, donate_argnums=0)
  x = jnp.ones((num_params,), jnp.float32)
  x = f(x).block_until_ready()
  times = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    x = f(x).block_until_ready()
    times.append(time.perf_counter() - t0)
  return 8 * num_params / statistics.median(times)


def measure(tree: str, rounds: int, warmup: int, compile_repeats: int,
            profile_dir: str | None = None) -> dict:
  """Step and compile times of every optimizer on one tree, and their ratios."""
  shapes = TREES[tree]()
  num_params = sum(int(np.prod(s)) for s in shapes.values())
  grads = make_tree(shapes, seed=1)
  names = ["lars_optax", "optax_lars", "lars_minimal", "lars_optax_lamb",
           "optax_lamb", "sgd_momentum", "plain"]
  compile_s = compile_seconds(shapes, grads, names[:-1], compile_repeats)
  times, launches = step_milliseconds(shapes, grads, names, rounds, warmup,
                                     profile_dir)
  ms = {name: statistics.median(t) for name, t in times.items()}
  bandwidth = copy_bandwidth(num_params, rounds)
  floor_ms = 1e3 * LARS_BYTES_PER_PARAM * num_params / bandwidth
  # The spread of ours / minimal within a round (same moment, same load).
  paired = [a / b for a, b in zip(times["lars_optax"], times["lars_minimal"])]
  return {
      "num_leaves": len(shapes),
      "num_params": num_params,
      "median_step_ms": ms,
      "compile_s": compile_s,
      "kernels_per_step": {n: k["kernels"] for n, k in launches.items()},
      "host_transfers_per_step": {n: k["host_transfers"]
                                  for n, k in launches.items()},
      "host_synchronizations_per_step": {n: k["host_synchronizations"]
                                         for n, k in launches.items()},
      "ratios": {
          "ours_over_lars_minimal": ms["lars_optax"] / ms["lars_minimal"],
          "optax_lars_over_ours": ms["optax_lars"] / ms["lars_optax"],
          "ours_over_sgd_momentum": ms["lars_optax"] / ms["sgd_momentum"],
          "lars_minimal_over_sgd_momentum":
              ms["lars_minimal"] / ms["sgd_momentum"],
          "compile_ours_over_lars_minimal":
              compile_s["lars_optax"] / compile_s["lars_minimal"],
          "compile_ours_over_optax_lars":
              compile_s["lars_optax"] / compile_s["optax_lars"],
          "optax_lamb_over_our_lamb": ms["optax_lamb"] / ms["lars_optax_lamb"],
          "compile_our_lamb_over_optax_lamb":
              compile_s["lars_optax_lamb"] / compile_s["optax_lamb"],
          "our_lamb_over_sgd_momentum": ms["lars_optax_lamb"] / ms["sgd_momentum"],
      },
      "ours_over_lars_minimal_per_round_quartiles":
          statistics.quantiles(paired, n=4),
      "copy_bandwidth_gbs": bandwidth / 1e9,
      "lars_floor_ms_at_copy_bandwidth": floor_ms,
      "ours_over_floor": ms["lars_optax"] / floor_ms,
  }


def print_tree(tree: str, r: dict, rounds: int) -> None:
  """One tree's medians, kernel counts and ratios, as lines of text."""
  print(f"{tree}: {r['num_leaves']} leaves, {r['num_params'] / 1e6:.2f}M "
        f"params, {jax.devices()[0].device_kind}, median of {rounds} "
        "interleaved rounds")
  for name, ms in r["median_step_ms"].items():
    compile_s = r["compile_s"].get(name)
    print(f"  {name:15s} {ms:8.2f} ms  {r['kernels_per_step'][name]:5d} "
          f"kernels, {r['host_transfers_per_step'][name]} host transfers, "
          f"{r['host_synchronizations_per_step'][name]} host syncs" + (
        f"   compile {compile_s:6.2f} s" if compile_s else ""))
  for key, value in r["ratios"].items():
    print(f"  {key:32s} {value:6.2f}")
  print(f"  ours {r['ours_over_floor']:.2f}x the 28 B/param floor at "
        f"{r['copy_bandwidth_gbs']:.1f} GB/s")


def targets(trees: dict) -> dict[str, bool]:
  """Which of the targets (README, Speed) the measured trees meet."""
  resnet, deep = trees.get("resnet50"), trees.get("transformer")
  met: dict[str, bool] = {}
  if resnet:
    met.update({
        "resnet50_step_ours_over_minimal_at_most_1.10":
            resnet["ratios"]["ours_over_lars_minimal"] <= 1.10,
        "resnet50_compile_ours_over_minimal_at_most_1.30":
            resnet["ratios"]["compile_ours_over_lars_minimal"] <= 1.30,
        "resnet50_optax_lars_over_ours_at_least_3":
            resnet["ratios"]["optax_lars_over_ours"] >= 3.0,
    })
  if resnet and jax.default_backend() == "gpu":
    met.update({
        "resnet50_gpu_ours_over_floor_at_most_1.5":
            resnet["ours_over_floor"] <= 1.5,
        "resnet50_gpu_optax_lars_over_ours_at_least_2":
            resnet["ratios"]["optax_lars_over_ours"] >= 2.0,
        "resnet50_gpu_no_host_transfer_in_our_step":
            resnet["host_transfers_per_step"]["lars_optax"] == 0,
        "resnet50_gpu_no_host_synchronization_in_our_step":
            resnet["host_synchronizations_per_step"]["lars_optax"] == 0,
    })
  if deep:
    met["transformer_compile_ours_over_minimal_at_most_1.30"] = (
        deep["ratios"]["compile_ours_over_lars_minimal"] <= 1.30)
  return met


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--compile-repeats", type=int, default=3)
  parser.add_argument("--trees", default=",".join(TREES))
  parser.add_argument("--profile_dir", default=None,
                      help="write a jax.profiler trace of 5 steps of ours "
                           "(per tree) here")
  parser.add_argument("--output", default=os.path.join(
      "experiments", "results", "benchmark_lars_cpu.json"))
  args = parser.parse_args()

  result = {
      "device": jax.devices()[0].device_kind,
      "machine": machine.describe("jax", "optax", devices=True),
      "command": " ".join(["python -m experiments.benchmarks.benchmark_lars", *sys.argv[1:]]),
      "rounds": args.rounds,
      "compile_repeats": args.compile_repeats,
      "trees": {},
  }
  for tree in args.trees.split(","):
    r = result["trees"][tree] = measure(
        tree, args.rounds, args.warmup, args.compile_repeats,
        args.profile_dir and os.path.join(args.profile_dir, tree))
    print_tree(tree, r, args.rounds)
  result["targets"] = targets(result["trees"])
  print("targets met:", result["targets"])
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(result, f, indent=2)
  print("wrote", args.output)


if __name__ == "__main__":
  main()
