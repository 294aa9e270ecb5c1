"""ResNet-50 on ImageNet with LARS at global batch 32768 (You et al. 2017).

  python -m experiments.main --config=experiments/configs/imagenet_resnet50_32k.py \
      --workdir=runs/imagenet_resnet50_32k \
      --config.data.manual_dir=/path/with/imagenet2012/ \
      --config.data.data_dir=/path/to/tensorflow_datasets

Hardware: 256 GPUs x 128, or 8 GPUs x 256 x 16 with
``--config.grad_accum_steps=16``. Expected top-1: 72.5% (the paper; 75.4% at
1K). The 8K recipe with peak LR 31.2 and 25 warm-up epochs
(``lars_optax.mlperf_resnet50_lars(32768)``); docs/training.md, "Recipes".
Status: smoke-tested only (tests/test_configs.py runs the 8K recipe, which this
one equals but for the fields set below); not run on ImageNet, so the top-1 is
the paper's.
"""
import ml_collections

from experiments.configs import common
from experiments.configs import imagenet_resnet50_8k

GLOBAL_BATCH_SIZE = 32768
EXPECTED_TOP1 = 72.5  # You et al. 2017, ResNet-50 + LARS, batch 32K


def get_config() -> ml_collections.ConfigDict:
  config = imagenet_resnet50_8k.get_config()
  # Peak LR 31.2, 25 warm-up epochs.
  common.mlperf_schedule(config, GLOBAL_BATCH_SIZE)
  # 39 steps per epoch: evaluate and checkpoint about every 4 epochs.
  config.eval_every_steps = 156
  config.checkpoint_every_steps = 156
  return config
