"""Tiny: seconds-long runs for tests and smoke checks (cnn_tiny, batch 64).

  python -m experiments.main --config=experiments/configs/tiny.py \
      --workdir=/tmp/tiny --config.data.manual_dir=../shared/datasets

Not a result: 8 steps of a 2-stage CNN with width 4 and 8.
"""
from experiments.configs import common
from experiments.configs import default


def get_config():
  config = default.get_config()
  config.model = "cnn_tiny"
  config.global_batch_size = 64
  config.eval_batch_size = 512
  config.data.train_split = "train[:1024]"
  config.data.eval_split = "test[:512]"
  config.base_learning_rate = 2.0
  config.base_batch_size = 64
  config.lr_scaling = "none"
  config.warmup_epochs = 0.0
  config.num_epochs = 0.0
  config.num_train_steps = 8
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 4
  common.metrics_files_only(config)
  return config
