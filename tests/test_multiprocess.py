"""Two processes with 4 fake CPU devices each == one process with 8 (with and
without gradient accumulation).

Launches `python -m experiments.main` with the jax.distributed flags on
127.0.0.1 (gloo collectives on CPU). Each process reads only its slice of every
global batch; only process 0 writes metrics. The runs' final checkpoints are
compared array by array.
"""
import contextlib
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # several processes

STEPS = 6


@pytest.fixture
def data_dir(fashion_mnist_data_dir):
  return fashion_mnist_data_dir


@contextlib.contextmanager
def reserved_port():
  """A port of 127.0.0.1 for the coordinator, held until the block ends.

  bind(0) gives a port no socket holds, and holding it keeps any other
  bind(0) from taking it before the coordinator binds it. SO_REUSEPORT, set
  after that bind, lets the coordinator's gRPC server (which binds with
  SO_REUSEPORT, as the same user) bind it beside this socket, which does not
  listen and so never takes a connection.
  """
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    yield s.getsockname()[1]


def command(workdir, data_dir, loop, *extra):
  return [
      sys.executable, "-m", "experiments.main",
      "--config=experiments/configs/tiny.py", f"--workdir={workdir}",
      f"--config.data.data_dir={data_dir}", f"--config.loop={loop}",
      f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=0",
      *extra,
  ]


def environment(num_devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def outputs(workdir):
  final = json.loads((workdir / "final_metrics.json").read_text())
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  return final, records


def final_state(workdir):
  """The state of the run's last checkpoint, as NumPy arrays."""
  path = workdir / "checkpoints" / str(STEPS) / "default"
  with ocp.PyTreeCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata.tree
    return checkpointer.restore(path, restore_args=jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata))


# jit also accumulates gradients over 2 micro-batches of 4 per device.
@pytest.mark.parametrize("loop,accum_steps", [("jit", 2), ("pmap", 1)])
def test_two_processes_match_one(loop, accum_steps, data_dir, tmp_path):
  accum = f"--config.grad_accum_steps={accum_steps}"
  single = tmp_path / "one_process"
  result = subprocess.run(command(single, data_dir, loop, accum), cwd=REPO,
                          env=environment(8), capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]

  multi = tmp_path / "two_processes"
  with reserved_port() as port:
    processes = [
        subprocess.Popen(
            command(multi, data_dir, loop, accum,
                    f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2", f"--process_id={i}"),
            cwd=REPO, env=environment(4), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    logs = []
    for process in processes:
      try:
        logs.append(process.communicate(timeout=300)[0])
      finally:
        if process.poll() is None:
          process.kill()
  for process, log in zip(processes, logs):
    assert process.returncode == 0, log[-4000:]

  final_1, records_1 = outputs(single)
  final_2, records_2 = outputs(multi)
  assert final_1["num_processes"] == 1 and final_2["num_processes"] == 2
  assert final_1["num_devices"] == final_2["num_devices"] == 8
  # Same data, same function; only the all-reduce order may differ: every
  # parameter, batch statistic and momentum, element by element.
  state_1, state_2 = final_state(single), final_state(multi)
  leaves_1 = jax.tree_util.tree_leaves_with_path(state_1)
  leaves_2 = jax.tree_util.tree_leaves_with_path(state_2)
  assert [path for path, _ in leaves_2] == [path for path, _ in leaves_1]
  assert any("params" in jax.tree_util.keystr(path) for path, _ in leaves_1)
  for (path, a), (_, b) in zip(leaves_1, leaves_2):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))
  for key in ("train_loss", "test_loss", "test_accuracy"):
    np.testing.assert_allclose(final_2[key], final_1[key], rtol=1e-5, err_msg=key)
  train_1 = [r for r in records_1 if r["kind"] == "train"]
  train_2 = [r for r in records_2 if r["kind"] == "train"]
  assert [r["step"] for r in train_2] == list(range(1, STEPS + 1))
  for r1, r2 in zip(train_1, train_2):
    for key in ("loss", "accuracy", "grad_norm", "param_norm"):
      np.testing.assert_allclose(r2[key], r1[key], rtol=1e-5, err_msg=f"{key} {r1['step']}")
  # Only process 0 wrote metrics: one line per step, no duplicates.
  assert len(train_2) == STEPS
