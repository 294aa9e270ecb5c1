"""experiments/diagnostics.py on tfds mock data with the tiny CNN."""
import json

import numpy as np
import pytest

from experiments import diagnostics
from experiments.configs import diagnostics as diagnostics_config
from tests.mock_tfds import mock_data

NUM_STEPS = 3


def tiny_config(**overrides):
  config = diagnostics_config.get_config()
  config.model = "cnn_tiny"
  config.data.name = "mnist"
  config.global_batch_size = 16
  config.data.prefetch = 0
  config.warmup_epochs = 0.25  # 1 of the 4 steps per epoch of 64 mock examples
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
  out = tmp_path_factory.mktemp("diagnostics")
  with mock_data(num_examples=64):
    result = diagnostics.run(tiny_config(), NUM_STEPS, str(out))
  return out, result


@pytest.mark.slow
def test_arrays_have_one_value_per_step_and_layer(summary):
  out, result = summary
  layers = result["layers"]
  # Every parameter leaf of cnn_tiny, in network order (input to output).
  names = list(layers)
  assert names[0] == "stages/0/conv/kernel" and names[-1] == "head/bias"
  assert {"fc/dense/kernel", "head/kernel", "stages/1/bn/scale"} <= set(names)
  for name, r in layers.items():
    for key in diagnostics.KEYS:
      assert len(r[key]) == NUM_STEPS, (name, key)
    assert r["adapted"] is True and r["size"] > 0
  assert [row["layer"] for row in result["first_iteration"]] == names
  assert result["first_iteration_spread_kernels"]["factor"] >= 1.0


@pytest.mark.slow
def test_lambda_is_the_papers_formula_of_the_recorded_norms(summary):
  _, result = summary
  config = tiny_config()
  eta, beta = config.lars.trust_coefficient, config.weight_decay
  checked = 0
  for name, r in result["layers"].items():
    w = np.asarray(r["weight_norm"])
    g = np.asarray(r["grad_norm"])
    lam = np.asarray(r["trust_ratio"])
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(g)) and np.all(g > 0)
    zero = w == 0  # zero-initialised biases: lambda = 1 (optax.lars's rule)
    np.testing.assert_array_equal(lam[zero], 1.0, err_msg=name)
    np.testing.assert_allclose(lam[~zero], eta * w[~zero] / (g[~zero] + beta * w[~zero]),
                               rtol=1e-4, err_msg=name)
    ratio = [np.nan if x is None else x for x in r["norm_ratio"]]
    np.testing.assert_allclose(ratio, w / g, rtol=1e-6, err_msg=name)
    checked += int(np.sum(~zero))
  assert checked >= NUM_STEPS * 5


@pytest.mark.slow
def test_files_are_written(summary):
  out, result = summary
  png = out / "trust_ratio_diagnostics.png"
  assert png.stat().st_size > 10_000
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  written = json.loads((out / "trust_ratio_diagnostics.json").read_text())
  assert written["num_steps"] == NUM_STEPS
  assert written["first_iteration"] == result["first_iteration"]
  assert "| stages/0/conv/kernel |" in diagnostics.format_table(
      written["first_iteration"])


def test_needs_our_lars():
  with pytest.raises(ValueError, match="optimizer='lars'"):
    diagnostics.record_layer_ratios(tiny_config(optimizer="sgd"), 1)
