r"""Trust-ratio diagnostics: the default CNN recipe with the paper's literal rule.

120 steps of LARS on the default CNN and data, recording per-layer ||w||, ||g||
and the LARS lambda at every step (``experiments/diagnostics.py`` runs this
config; a few minutes on a 2-core CPU):

  python -m experiments.diagnostics --manual_dir=../shared/datasets \
      --out=experiments/results/

Batch 4096, peak LR 10 (not scaled with the batch) after 2 warm-up epochs, then
poly-2 decay over the recorded steps. Every leaf is adapted and decayed
(``exclude_bias_and_norm=False``), as in Algorithm 1, so that every layer's
lambda is shown. The result: docs/results.md, "Trust-ratio diagnostics", and
experiments/results/trust_ratio_diagnostics.json.
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
