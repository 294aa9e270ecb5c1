"""Speed of one LARS step on a ResNet-50-shaped parameter tree.

Times one jitted, donated optimizer step (update + apply_updates) for
lars_optax.lars, optax.lars, a minimal plain-jnp LARS (the floor for any
LARS on this backend), optax.sgd(momentum=0.9) and a plain ``p - lr * g``
step, on the 161 float32 leaves (25.6M parameters) of ResNet-50. Runs are
interleaved (one of each per round, in rotating order) and the median over
rounds is reported, with compile times, achieved bandwidth against the
28 bytes/param memory-traffic floor of LARS, and the machine's description.

    python -m experiments.benchmark_lars            # CPU, writes the JSON
    python -m experiments.benchmark_lars --rounds 30 --output out.json
"""

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lars_optax

# Bytes moved per parameter (float32): LARS reads w, g for the norms (8), then
# reads w, g, v and writes w, v (20). SGD with momentum: the second pass only.
LARS_BYTES_PER_PARAM = 28
SGD_MOMENTUM_BYTES_PER_PARAM = 20


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


def compile_seconds(shapes, grads, repeats):
  """Median wall time of trace + lower + compile, over fresh programs.

  Each repeat uses a slightly different learning rate so that no cache
  (tracing or XLA compilation) can serve it; the optimizers are interleaved
  so that load on the machine affects them alike.
  """
  params = make_tree(shapes, seed=0)
  times = {}
  for repeat in range(repeats):
    for name, tx in optimizers(0.1 + 1e-6 * (repeat + 1)).items():
      step = make_step(tx)
      state = tx.init(params)
      t0 = time.perf_counter()
      step.lower(params, state, grads).compile()
      times.setdefault(name, []).append(time.perf_counter() - t0)
  return {name: statistics.median(t) for name, t in times.items()}


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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--compile-repeats", type=int, default=3)
  parser.add_argument("--output", default=os.path.join(
      os.path.dirname(__file__), "results", "benchmark_lars_cpu.json"))
  args = parser.parse_args()

  load_at_start = os.getloadavg()
  shapes = resnet50_shapes()
  num_params = sum(int(np.prod(s)) for s in shapes.values())
  grads = make_tree(shapes, seed=1)
  txs = dict(optimizers(), plain=None)
  compile_s = compile_seconds(shapes, grads, args.compile_repeats)
  steps, carries = {}, {}
  for name, tx in txs.items():
    params = make_tree(shapes, seed=0)
    state = tx.init(params) if tx is not None else ()
    step = make_step(tx)
    t0 = time.perf_counter()
    compiled = step.lower(params, state, grads).compile()
    compile_s.setdefault(name, time.perf_counter() - t0)
    steps[name] = compiled
    for _ in range(args.warmup):
      params, state = compiled(params, state, grads)
    jax.block_until_ready(params)
    carries[name] = (params, state)

  times = {name: [] for name in txs}
  names = list(txs)
  for r in range(args.rounds):
    # Interleaved, one run of each per round, in an order rotated every round
    # so that each step follows every other equally often (a step timed
    # right after optax.lars's 100 ms of memory traffic runs slower).
    for name in names[r % len(names):] + names[:r % len(names)]:
      params, state = carries[name]
      t0 = time.perf_counter()
      params, state = steps[name](params, state, grads)
      jax.block_until_ready((params, state))
      times[name].append(time.perf_counter() - t0)
      carries[name] = (params, state)
  median_ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
  # The spread of ours / sgd-momentum within a round (same moment, same load).
  paired = [a / b for a, b in zip(times["lars_optax"], times["sgd_momentum"])]
  quartiles = statistics.quantiles(paired, n=4)

  bandwidth = copy_bandwidth(num_params, args.rounds)
  floor_ms = 1e3 * LARS_BYTES_PER_PARAM * num_params / bandwidth
  ours_gbps = LARS_BYTES_PER_PARAM * num_params / (median_ms["lars_optax"] * 1e-3) / 1e9
  result = {
      "machine": {
          "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(),
          "platform": platform.platform(),
          "jax_version": jax.__version__,
          "optax_version": optax.__version__,
          "device_kind": jax.devices()[0].device_kind,
          "backend": jax.default_backend(),
      },
      "num_leaves": len(shapes),
      "num_params": num_params,
      "rounds": args.rounds,
      "compile_repeats": args.compile_repeats,
      "load_average_at_start": load_at_start,
      "median_step_ms": median_ms,
      "compile_s": compile_s,
      "ratios": {
          "optax_lars_over_ours": median_ms["optax_lars"] / median_ms["lars_optax"],
          "ours_over_sgd_momentum": median_ms["lars_optax"] / median_ms["sgd_momentum"],
          "ours_over_plain": median_ms["lars_optax"] / median_ms["plain"],
          "ours_over_lars_minimal": median_ms["lars_optax"] / median_ms["lars_minimal"],
          "lars_minimal_over_sgd_momentum":
              median_ms["lars_minimal"] / median_ms["sgd_momentum"],
          "compile_ours_over_optax_lars": compile_s["lars_optax"] / compile_s["optax_lars"],
      },
      "ours_over_sgd_momentum_per_round_quartiles": quartiles,
      "bytes_per_param": {
          "lars_floor_bytes_per_param": LARS_BYTES_PER_PARAM,
          "copy_bandwidth_gb_per_s": bandwidth / 1e9,
          "lars_floor_ms_at_copy_bandwidth": floor_ms,
          "ours_achieved_gb_per_s_at_28_bytes": ours_gbps,
          "ours_over_floor": median_ms["lars_optax"] / floor_ms,
          "sgd_momentum_achieved_gb_per_s_at_20_bytes":
              SGD_MOMENTUM_BYTES_PER_PARAM * num_params
              / (median_ms["sgd_momentum"] * 1e-3) / 1e9,
      },
      "targets": {
          "optax_lars_over_ours_at_least_2.5":
              median_ms["optax_lars"] / median_ms["lars_optax"] >= 2.5,
          "ours_over_sgd_momentum_at_most_1.45":
              median_ms["lars_optax"] / median_ms["sgd_momentum"] <= 1.45,
          "compile_no_longer_than_optax_lars":
              compile_s["lars_optax"] <= compile_s["optax_lars"],
      },
  }
  print(f"{len(shapes)} leaves, {num_params / 1e6:.2f}M params, "
        f"{jax.devices()[0].device_kind}, median of {args.rounds} interleaved runs")
  for name in txs:
    print(f"  {name:13s} {median_ms[name]:8.2f} ms   compile {compile_s[name]:6.2f} s")
  for key, value in result["ratios"].items():
    print(f"  {key:32s} {value:6.2f}")
  print("  ours / sgd_momentum per round, quartiles:",
        " ".join(f"{q:.2f}" for q in quartiles))
  b = result["bytes_per_param"]
  print(f"  copy bandwidth {b['copy_bandwidth_gb_per_s']:.1f} GB/s -> 28 B/param floor "
        f"{floor_ms:.2f} ms; ours {ours_gbps:.1f} GB/s ({b['ours_over_floor']:.2f}x floor)")
  print("  targets met:", result["targets"])
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, "w") as f:
    json.dump(result, f, indent=2)
  print("wrote", args.output)


if __name__ == "__main__":
  main()
