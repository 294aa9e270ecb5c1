r"""Trust-ratio diagnostics: the default CNN recipe with the paper's literal rule.

A run: 120 steps of LARS on the default CNN and data, recording per-layer
||w||, ||g|| and the LARS lambda at every step (``experiments/diagnostics.py``
runs this config):

  python -m experiments.diagnostics --manual_dir=../shared/datasets \
      --out=experiments/results/

LARS with ``formula="paper"``, trust coefficient 0.001, momentum 0.9, weight
decay 5e-4, batch 4096 (the default config's), peak LR 10 (the paper's
AlexNet-BN LR at 4K, not scaled with the batch) after 2 epochs of warm-up,
then poly-2 decay over the recorded steps. Every leaf is adapted and decayed
(``exclude_bias_and_norm=False``), as in Algorithm 1, so that every layer's
lambda is shown. A few minutes on a 2-core CPU; the result (the
first-iteration table against the paper's Table 2) is in experiments/README.md
and experiments/results/trust_ratio_diagnostics.json.
"""
import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.exclude_bias_and_norm = False
  config.base_learning_rate = 10.0
  config.lr_scaling = "none"  # base_learning_rate is the peak LR
  config.warmup_epochs = 2.0
  config.num_train_steps = 120
  return config
