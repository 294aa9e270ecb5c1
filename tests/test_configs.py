"""The ImageNet recipes (experiments/configs/imagenet_*.py): paper values, and
two steps of each model's recipe on tfds mock data with its tiny variant."""
import importlib
import math

import numpy as np
import pytest
from flax import traverse_util

from experiments import optimizers
from experiments import train
from tests.mock_tfds import mock_data

# config module -> (model, batch, peak LR, warm-up epochs, epochs, end LR, top-1)
RECIPES = {
    "imagenet_resnet50_8k": ("resnet50", 8192, 10.0, 5.0, 90.0, 1e-4, 75.2),
    "imagenet_resnet50_32k": ("resnet50", 32768, 31.2, 25.0, 90.0, 1e-4, 72.5),
    "imagenet_alexnet_bn_8k": ("alexnet_bn", 8192, 14.0, 5.0, 100.0, 0.0, 60.1),
}
# Tiny model and image side for the smoke test of each recipe.
TINY = {"resnet50": ("resnet50_tiny", 32), "alexnet_bn": ("alexnet_bn_tiny", 64)}


def load(name):
  return importlib.import_module(f"experiments.configs.{name}")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_has_the_papers_values(name):
  module = load(name)
  config = module.get_config()
  model, batch, peak, warmup, epochs, end, top1 = RECIPES[name]
  assert config.model == model
  assert config.global_batch_size == batch
  assert config.lr_scaling == "none"
  assert math.isclose(config.base_learning_rate, peak)
  assert config.warmup_epochs == warmup
  assert config.num_epochs == epochs and config.num_train_steps == 0
  assert math.isclose(config.end_learning_rate, end)
  assert config.power == 2.0
  assert config.optimizer == "lars" and config.lars.formula == "paper"
  assert config.lars.trust_coefficient == 0.001 and config.lars.eps == 0.0
  assert config.momentum == 0.9 and config.weight_decay == 5e-4
  assert config.data.name == "imagenet2012" and config.data.cache is False
  assert config.data.eval_split == "validation" and config.data.image_size == 224
  assert config.loop == "jit" and config.batch_norm == "per_device"
  assert module.EXPECTED_TOP1 == top1
  doc = module.__doc__
  assert f"{top1}%" in doc and "smoke-tested only" in doc
  assert f"--config=experiments/configs/{name}.py" in doc
  # The schedule it builds peaks at the paper's LR after the warm-up.
  steps_per_epoch = 1_281_167 // batch
  schedule = optimizers.create_learning_rate_schedule(config, steps_per_epoch)
  assert math.isclose(schedule.peak_learning_rate, peak)
  assert schedule.warmup_steps == round(warmup * steps_per_epoch)
  assert schedule.total_steps == round(epochs * steps_per_epoch)
  assert math.isclose(float(schedule.fn(schedule.warmup_steps)), peak, rel_tol=1e-6)


def test_the_32k_recipe_is_the_8k_recipe_with_its_own_schedule():
  """So the smoke run of the 8K recipe also runs the 32K recipe's code."""
  small, large = (
      traverse_util.flatten_dict(load(name).get_config().to_dict(), sep=".")
      for name in ("imagenet_resnet50_8k", "imagenet_resnet50_32k"))
  assert small.keys() == large.keys()
  assert {k for k in small if small[k] != large[k]} == {
      "global_batch_size", "base_learning_rate", "warmup_epochs",
      "eval_every_steps", "checkpoint_every_steps"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet_alexnet_bn_8k", "imagenet_resnet50_8k"])
def test_recipe_runs_two_steps_on_mock_imagenet(name, tmp_path):
  config = load(name).get_config()
  config.model, config.data.image_size = TINY[config.model]
  config.global_batch_size = 16  # 8 fake devices x 2 (per-device BN of 2)
  config.eval_batch_size = 16
  config.num_train_steps = 2
  # (the 5+ warm-up epochs are cut to fit the 2 steps, with a warning)
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 0
  config.data.prefetch = 0
  config.data.worker_processes = 0  # the tfds mock lives in this process only
  config.tensorboard = False
  config.plot = False
  config.progress_bar = False
  with mock_data(num_examples=32):
    final = train.train_and_evaluate(config, str(tmp_path))
  assert final["step"] == 2 and final["dataset"] == "imagenet2012"
  for key in ("train_loss", "test_loss", "test_accuracy", "params_checksum"):
    assert np.isfinite(final[key]), (key, final[key])
  assert final["peak_learning_rate"] == RECIPES[name][2]
