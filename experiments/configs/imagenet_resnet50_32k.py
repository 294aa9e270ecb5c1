"""ResNet-50 on ImageNet with LARS at global batch 32768 (You et al. 2017).

Command (ImageNet prepared by tfds from the two original tar files):

  python -m experiments.main --config=experiments/configs/imagenet_resnet50_32k.py \
      --workdir=runs/imagenet_resnet50_32k \
      --config.data.manual_dir=/path/with/imagenet2012/ \
      --config.data.data_dir=/path/to/tensorflow_datasets

``data.manual_dir`` must hold ``ILSVRC2012_img_train.tar`` and
``ILSVRC2012_img_val.tar``; see ``imagenet_resnet50_8k.py``.

Hardware: the global batch is devices x per-device micro-batch x
``grad_accum_steps``:

* 256 GPUs: 256 x 128, ``grad_accum_steps=1`` (jit loop over all processes);
* 8 GPUs: 8 x 256 x 16, add ``--config.grad_accum_steps=16`` (one LARS step
  every 16 micro-batches of 256 per GPU; 16x the time per step of the
  many-GPU form, the same result up to BatchNorm's micro-batch statistics).

Per-device BatchNorm as in the paper (per micro-batch with accumulation).

Expected top-1: 72.5% (You et al. 2017, ResNet-50 with LARS at 32K, against
75.4% at 1K; Goyal et al.'s SGD with linear scaling reaches 72.4% = 100 - 27.6
at 32K).

Hyperparameters: as the 8K recipe (LARS, paper formula, trust coefficient
0.001, momentum 0.9, weight decay 5e-4, biases and BN excluded, poly-2 decay
to 1e-4, 90 epochs) with the MLPerf LARS table's entry for batch >= 32K: peak
LR 31.2 and 25 warm-up epochs (``lars_optax.mlperf_resnet50_lars(32768)``).
The paper warms up for 5-12 epochs at this batch; MLPerf's longer warm-up was
tuned for its 75.9% target.

Status: smoke-tested only (tests/test_configs.py: 2 steps of the 8K recipe,
which this one equals but for the fields set below, with resnet50_tiny on
tfds mock data, 8 fake CPU devices); not run on ImageNet, so the expected
top-1 is the paper's, not a measurement of this code.
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
