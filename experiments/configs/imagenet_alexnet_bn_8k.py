"""AlexNet-BN on ImageNet with LARS at global batch 8192 (You et al. 2017).

Command (ImageNet prepared by tfds from the two original tar files):

  python -m experiments.main --config=experiments/configs/imagenet_alexnet_bn_8k.py \
      --workdir=runs/imagenet_alexnet_bn_8k \
      --config.data.manual_dir=/path/with/imagenet2012/ \
      --config.data.data_dir=/path/to/tensorflow_datasets

``data.manual_dir`` must hold ``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar``; see ``imagenet_resnet50_8k.py``.

Hardware: AlexNet-BN (about 61M parameters, mostly fc6/fc7) is light on
compute; 8 GPUs x 1024 fit the batch of 8192 (the paper used 8 P100s, with
per-GPU BatchNorm). The input pipeline (JPEG decoding, random-resized crop
in grain's worker processes) is then the bottleneck: give it many CPU cores.

Expected top-1: 60.1% (You et al. 2017, AlexNet-BN with LARS at 8K, LR 14;
60.2% at 512 with LR 2). Without LARS, plain AlexNet falls from 58.8% (512)
to 44.8% (8K).

Hyperparameters (the paper's): LARS with ``formula="paper"``, trust
coefficient 0.001, momentum 0.9, weight decay 5e-4, peak LR 14 (not scaled
with the batch), linear warm-up then polynomial decay of power 2, 100 epochs.
The paper warms AlexNet up for 2-5 epochs: 5 here. The decay ends at 0 (the
paper's ``(1 - t/T)^2``). Biases and BatchNorm parameters are excluded from
LARS and weight decay (zero-initialised BN biases would get trust ratio 1 at
LR 14); ``--config.exclude_bias_and_norm=False`` gives the literal rule.
Images are 224x224 (conv1 11x11/4 with padding 2 gives the 55x55 of the
original 227x227 input).

Status: smoke-tested only (tests/test_configs.py: 2 steps of alexnet_bn_tiny on
tfds mock data, 8 fake CPU devices); not run on ImageNet, so the expected
top-1 is the paper's, not a measurement of this code.
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
