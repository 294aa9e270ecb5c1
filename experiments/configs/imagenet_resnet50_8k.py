"""ResNet-50 on ImageNet with LARS at global batch 8192 (You et al. 2017).

  python -m experiments.main --config=experiments/configs/imagenet_resnet50_8k.py \
      --workdir=runs/imagenet_resnet50_8k \
      --config.data.manual_dir=/path/with/imagenet2012/ \
      --config.data.data_dir=/path/to/tensorflow_datasets

Hardware: 64 GPUs x 128 (the command above), or 8 GPUs x 256 x 4 with
``--config.grad_accum_steps=4``. Expected top-1: 75.2% (the paper; 75.4% at
1K). Peak LR 10 after 5 warm-up epochs (``lars_optax.mlperf_resnet50_lars``),
poly-2 decay to 1e-4 at 90 epochs; the choices: docs/training.md, "Recipes".
Status: smoke-tested only (tests/test_configs.py, resnet50_tiny on tfds mock
data, 8 fake CPU devices); not run on ImageNet, so the top-1 is the paper's.
"""
import ml_collections

from experiments.configs import common
from experiments.configs import default

GLOBAL_BATCH_SIZE = 8192
EXPECTED_TOP1 = 75.2  # You et al. 2017, ResNet-50 + LARS, batch 8K


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  common.imagenet(config)
  config.model = "resnet50"
  config.eval_batch_size = 1024
  common.mlperf_schedule(config, GLOBAL_BATCH_SIZE)  # peak LR 10, 5 warm-up epochs
  # 156 steps per epoch: evaluate and checkpoint about every 4 epochs.
  config.eval_every_steps = 625
  config.checkpoint_every_steps = 625
  return config
