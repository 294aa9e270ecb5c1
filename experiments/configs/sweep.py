"""The batch-size sweep on Fashion-MNIST: one run of the grid.

The sweep driver (``python -m experiments.sweep``) builds every run of the grid
below from this config, overriding ``optimizer``, ``lars.formula``,
``global_batch_size``, ``base_learning_rate`` and ``seed``; this file fixes
everything else, so one run is also reproducible on its own:

  python -m experiments.main --config=experiments/configs/sweep.py \
      --workdir=runs/one --config.data.manual_dir=../shared/datasets \
      --config.optimizer=lars --config.global_batch_size=8192 \
      --config.base_learning_rate=10

Setting: the small CNN with BatchNorm ("cnn", an AlexNet-BN in miniature,
43.5k parameters), a fixed budget of ``num_epochs`` epochs whatever the batch,
warm-up of ``warmup_epochs`` then polynomial decay of power 2 to 0, weight
decay 5e-4, momentum 0.9, one device. The learning-rate rules follow the
papers being compared:

* ``sgd``: SGD-momentum as Goyal et al. (2017) train it: peak LR =
  ``base_learning_rate * global_batch_size / 256`` (linear scaling), the same
  warm-up and decay (Goyal et al. use step decay; poly-2 is kept for every
  optimizer so that only the update rule differs).
* ``lars`` (ours, ``formula="paper"`` or ``"combined"``) and ``optax_lars``:
  the peak LR is ``base_learning_rate`` itself (``lr_scaling="none"``): the
  paper tunes it per batch size (2 at 512 to 22 at 32K for AlexNet-BN).

Every leaf is adapted and decayed, as in Algorithm 1 (``exclude_bias_and_norm``
False): warm-up from 0 keeps the first steps of zero-initialised biases small.

Hardware, run time and results: experiments/README.md (written by
``python -m experiments.sweep --summarize``).
"""
from experiments.configs import common
from experiments.configs import default

# The grid (read by experiments/sweep.py). The same number of learning rates
# for every optimizer; LARS LRs are peak values, SGD LRs are per 256 examples.
BATCH_SIZES = (128, 512, 2048, 8192, 16384)
# Four values per optimizer, spaced x3.
LEARNING_RATES = {
    "sgd": (0.01, 0.03, 0.1, 0.3),  # Goyal et al.: 0.1 per 256
    "lars/paper": (2.0, 6.0, 18.0, 54.0),  # paper, AlexNet-BN: 2 (512) to 22 (32K)
    "lars/combined": (2.0, 6.0, 18.0, 54.0),
    "optax_lars/combined": (2.0, 6.0, 18.0, 54.0),
}
# At the two largest batch sizes the optima sit at the edges of those four
# (SGD's lowest LR, LARS's highest), so there every optimizer gets one more
# value on that side.
EDGE_LEARNING_RATES = {
    "sgd": (0.003,),
    "lars/paper": (162.0,),
    "lars/combined": (162.0,),
    "optax_lars/combined": (162.0,),
}
EDGE_BATCH_SIZES = (8192, 16384)
SEEDS = (0,)
# Extra seeds of the best learning rate at the largest batch sizes.
EXTRA_SEEDS = (1,)
EXTRA_SEED_BATCH_SIZES = (8192, 16384)


def get_config():
  config = default.get_config()
  config.num_epochs = 10.0
  config.warmup_epochs = 2.0
  config.exclude_bias_and_norm = False
  config.lr_scaling = "none"  # the driver sets "linear" for sgd
  # Bookkeeping kept cheap: the sweep wants final accuracies, not curves.
  config.log_every_steps = 50
  config.log_trust_ratios = False
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 0
  config.checkpoints_to_keep = 1
  common.metrics_files_only(config)
  return config
