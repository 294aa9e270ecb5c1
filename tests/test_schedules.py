"""Warm-up + polynomial decay, batch-size scaling, the MLPerf preset."""

import jax
import numpy as np
import pytest

import lars_optax
from tests import reference


def test_warmup_polynomial_decay_values():
  sched = lars_optax.warmup_polynomial_decay_schedule(
      10.0, 5, 25, init_value=1.0, end_value=1e-4, power=2.0)
  ref = reference.warmup_poly(10.0, 5, 25, end=1e-4, power=2.0, init=1.0)
  steps = np.arange(0, 40)
  np.testing.assert_allclose(jax.vmap(sched)(steps), [ref(t) for t in steps],
                             rtol=1e-6)
  assert float(sched(5)) == pytest.approx(10.0)
  assert float(sched(1000)) == pytest.approx(1e-4)


def test_paper_schedule_without_warmup():
  sched = lars_optax.warmup_polynomial_decay_schedule(2.0, 0, 100)
  for t in (0, 10, 50, 99, 100):
    assert float(sched(t)) == pytest.approx(2.0 * (1 - t / 100) ** 2, abs=1e-6)


@pytest.mark.parametrize("kwargs, name", [
    (dict(peak_value=-1.0), "peak_value"),
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(warmup_steps=1.5), "warmup_steps"),
    (dict(total_steps=5), "total_steps"),
    (dict(power=0.0), "power"),
    (dict(end_value=float("nan")), "end_value"),
])
def test_schedule_validation(kwargs, name):
  args = dict(peak_value=1.0, warmup_steps=5, total_steps=10)
  args.update(kwargs)
  with pytest.raises(ValueError, match=name):
    lars_optax.warmup_polynomial_decay_schedule(**args)


def test_scale_learning_rate():
  assert lars_optax.scale_learning_rate(0.1, 8192) == pytest.approx(3.2)
  assert lars_optax.scale_learning_rate(0.1, 1024, rule="sqrt") == pytest.approx(0.2)
  assert lars_optax.scale_learning_rate(
      1.0, 512, base_batch_size=128) == pytest.approx(4.0)
  with pytest.raises(ValueError, match="rule"):
    lars_optax.scale_learning_rate(0.1, 512, rule="cubic")
  with pytest.raises(ValueError, match="global_batch_size"):
    lars_optax.scale_learning_rate(0.1, 0)
  with pytest.raises(ValueError, match="base_learning_rate"):
    lars_optax.scale_learning_rate(-0.1, 256)
  with pytest.raises(ValueError, match="base_batch_size"):
    lars_optax.scale_learning_rate(0.1, 256, base_batch_size=0)


@pytest.mark.parametrize("batch, lr, warmup", [
    (1024, 10.0, 5), (16383, 10.0, 5), (16384, 25.0, 5), (32767, 25.0, 5),
    (32768, 31.2, 25), (65536, 31.2, 25),
])
def test_mlperf_table(batch, lr, warmup):
  preset = lars_optax.mlperf_resnet50_lars(batch)
  assert preset.peak_learning_rate == lr and preset.warmup_epochs == warmup
  assert preset.end_learning_rate == 1e-4 and preset.power == 2.0
  assert preset.eps == 0.0


def test_mlperf_preset_schedule():
  sched = lars_optax.mlperf_resnet50_lars(8192).schedule(steps_per_epoch=10,
                                                         total_epochs=40)
  assert float(sched(0)) == 0.0
  assert float(sched(50)) == pytest.approx(10.0)
  assert float(sched(400)) == pytest.approx(1e-4)
  with pytest.raises(ValueError, match="total_epochs"):
    lars_optax.mlperf_resnet50_lars(8192).schedule(10, 5)
  with pytest.raises(ValueError, match="global_batch_size"):
    lars_optax.mlperf_resnet50_lars(-1)
