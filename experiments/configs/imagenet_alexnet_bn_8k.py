"""AlexNet-BN on ImageNet with LARS at global batch 8192 (You et al. 2017).

  python -m experiments.main --config=experiments/configs/imagenet_alexnet_bn_8k.py \
      --workdir=runs/imagenet_alexnet_bn_8k \
      --config.data.manual_dir=/path/with/imagenet2012/ \
      --config.data.data_dir=/path/to/tensorflow_datasets

Hardware: 8 GPUs x 1024, and many CPU cores for the JPEG decoding. Expected
top-1: 60.1% (the paper, LR 14). Peak LR 14 after 5 warm-up epochs, poly-2
decay to 0 at 100 epochs; the choices: docs/training.md, "Recipes".
Status: smoke-tested only (tests/test_configs.py, alexnet_bn_tiny on tfds mock
data, 8 fake CPU devices); not run on ImageNet, so the top-1 is the paper's.
"""
import ml_collections

from experiments.configs import common
from experiments.configs import default

GLOBAL_BATCH_SIZE = 8192
EXPECTED_TOP1 = 60.1  # You et al. 2017, AlexNet-BN + LARS, batch 8K, LR 14


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  common.imagenet(config)
  config.model = "alexnet_bn"
  config.global_batch_size = GLOBAL_BATCH_SIZE
  config.eval_batch_size = 1024
  config.base_learning_rate = 14.0
  config.warmup_epochs = 5.0
  config.num_epochs = 100.0
  # 156 steps per epoch: evaluate and checkpoint about every 4 epochs.
  config.eval_every_steps = 625
  config.checkpoint_every_steps = 625
  return config
