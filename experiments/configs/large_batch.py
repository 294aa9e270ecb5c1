r"""The large-batch study: where does LARS hold accuracy that SGD loses?

A run of the study is one training run of a small CNN on Fashion-MNIST at
one (model, optimizer, batch size, peak learning rate, seed). The driver runs
or resumes the whole study (grid, extra seeds, warm-up ablation, then study
2's Q2 and Q1 grids and seeds), skipping the runs already in
experiments/results/large_batch.csv, and summarises it:

  python -m experiments.study.run --manual_dir=../shared/datasets
  python -m experiments.study.run --summarize

One run of the study on its own (``get_config("MODEL,OPTIMIZER,BATCH,LR[,SEED]")``):

  python -m experiments.main \
      --config=experiments/configs/large_batch.py:A,lars,4096,12.5,0 \
      --workdir=runs/one --config.data.manual_dir=../shared/datasets

Design (where there was a choice, the choice and its reason):

* Data: Fashion-MNIST, 5,000 training images held out as a validation set
  (``data.validation_seed=0``, the same set for every run and every training
  seed), 55,000 left to train on; validation accuracy every quarter epoch
  (selection and steps-to-target), the 10,000 test images once at the end
  (reported, never used to select).
* Models: the small CNN ("cnn"). A (primary): without BatchNorm, conv and
  hidden dense layers with zero-initialised biases. B: with BatchNorm over
  contiguous groups of 128 examples at every batch size
  (``batch_norm_group_size=128``), as per-GPU BN in the paper's runs.
  Initialisation, the same for both models and both optimizers
  (``init_scheme="fan_in"``): He-normal fan-in for the convolutions and the
  hidden dense layer, LeCun-normal fan-in (std 1/sqrt(128) ~ 0.09) for the
  classifier. Why fan-in: without BN, fan-in keeps the activations' scale
  through the ReLU layers (He et al. 2015), and the classifier then has a norm
  (~3) like the other layers', so its LARS trust ratio is not the ~1e-4 that
  the repo's default N(0, 0.01) classifier gets; one scheme for both models
  so that BN is the only difference between A and B.
* Budget: 20 epochs of examples at every batch size: ``round(20 * 55,000 /
  batch)`` steps (8,594 at 128, 269 at 4096, 134 at 8192). Why examples
  rather than 20 sampler epochs: the sampler drops each epoch's remainder,
  which at 8192 is 11 % of the data; counted in examples every batch size
  sees the same 1.1 M images.
* Schedule, both optimizers: linear warm-up from 0 for
  ``max(ceil(10 % of the steps), 20)`` steps, then (1 - t/T)^2 to 0; momentum
  0.9 (LR inside the momentum, as Algorithm 1 and optax.sgd), weight decay
  5e-4. Ablation at 4096: warm-up of 25 % of the steps (5 epochs: Goyal et
  al.'s and MLPerf's LARS warm-up), at each optimizer's selected learning rate,
  3 seeds, both models, so it pairs run by run with the main 4096 result.
* LARS: ``lars_optax.lars``, formula "paper" (||g|| + beta ||w||), trust
  coefficient 0.001, eps 0, no clipping; peak learning rate gamma on
  ``LARS_LEARNING_RATES`` (gamma * eta = 0.3 % to 5 %), the same grid at every
  batch size (the paper tunes gamma per batch).
* SGD-momentum as Goyal et al.: at batch 128 the grid ``SGD_LEARNING_RATES``
  (around 0.1 per 256 examples); at batch B the linearly scaled value
  ``lr_128 * B / 128`` times ``SGD_SCALE_FACTORS`` (x1/16 ... x1), where
  ``lr_128`` is SGD's best at batch 128 of the same model (so batch 128 runs
  first). Five learning rates for each optimizer at every batch; where either
  optimizer's best (validation) sits at an edge of its grid, both optimizers
  get one more value (x2 or x1/2) on that side, up to
  ``MAX_EDGE_EXTENSIONS`` times per side. A grid where no run learns (best
  validation accuracy below ``NO_LEARNING_BELOW``) counts as having its optimum
  at its low edge, since an argmax over runs that all failed picks a value by
  noise.
* Seeds: seed 0 over the grid; seeds 1 and 2 at each optimizer's selected
  learning rate at every batch size (and in the ablation): the claim test's
  reference R is the mean test accuracy at batch 128, so it needs seeds
  there as well as at the large batches (512 too, for a uniform rule: 4 runs).
* Biases and normalisation parameters (every leaf with ndim <= 1): adapted
  and decayed like the weights, as in Algorithm 1 (``EXCLUDE_BIAS_AND_NORM =
  False``), one rule for the whole study and both optimizers (for SGD it only
  decides their weight decay); chosen in a pilot (results/large_batch_pilot.md;
  its code is at commit a505d54): LARS at batch 4096, 3 epochs, peak gamma 50
  and 12.5, both models, both bias rules, where the rules differ most. Why the
  rule matters: an adapted zero-initialised bias takes one step with trust
  ratio 1 at the first non-zero learning rate of the warm-up (gamma divided by
  the warm-up steps) and is then scaled like every other layer; an excluded
  one moves at gamma itself, 3-50.
* Study 2, Q1 (``BUDGET_*``): 80 epochs at A/4096, A/8192 and B/8192 (where
  the 20-epoch claim failed) and at batch 128 (the epoch-matched reference
  R80), to tell step starvation from the optimizer; each grid is centred on
  the 20-epoch selection, with the same extension rule.

The order of the runs: ``experiments/study/plan.py``; the claim test, steps to
target, the verdict tables and the plots: ``experiments/study/report.py``. What
the pilot and the study measured (the rule comparison, speed, wall time, the
verdicts) is in experiments/README.md and experiments/results/.
"""
import ml_collections

from experiments.configs import common
from experiments.configs import default

# Models: letter -> how the CSV names it and what differs.
MODELS = {
    "A": dict(model="cnn", batch_norm="none", use_batch_norm=False),
    "B": dict(model="cnn", batch_norm="groups_of_128", use_batch_norm=True),
}
BATCH_NORM_GROUP_SIZE = 128
BATCH_SIZES = {
    "A": (128, 512, 1024, 2048, 4096, 8192),
    "B": (128, 1024, 4096, 8192),
}
REFERENCE_BATCH_SIZE = 128
# The order of the grids, most informative first: the reference batch (R, and
# the SGD learning rate the other grids scale from), then the large batches
# where the optimizers should differ, the middle ones last.
GRID_ORDER = {
    "A": (128, 4096, 8192, 2048, 1024, 512),
    "B": (128, 4096, 8192, 1024),
}
TRAIN_EXAMPLES = 60_000
VALIDATION_HOLDOUT = 5_000
EPOCHS = 20.0
OPTIMIZERS = ("lars", "sgd")

# Learning-rate grids (peak values of the schedule).
LARS_LEARNING_RATES = (3.125, 6.25, 12.5, 25.0, 50.0)  # gamma; gamma*eta 0.003-0.05
SGD_LEARNING_RATES = (0.025, 0.05, 0.1, 0.2, 0.4)  # at batch 128 (Goyal: 0.05)
SGD_SCALE_FACTORS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)  # x (lr_128 * B / 128)
EDGE_FACTOR = 2.0
# Up to five extensions per side: SGD's optimum can sit far below the
# linearly scaled rate at the largest batches (x1/16 x 1/2^5 = x1/512).
MAX_EDGE_EXTENSIONS = 5
# A grid where no run learns (best validation accuracy below this; chance is
# 10 %) has its optimum below its lowest value: every run diverged, so the
# grid is extended downwards for both optimizers, as at an edge.
NO_LEARNING_BELOW = 0.2

SEEDS = (0, 1, 2)
# R is a mean over seeds at 128, so every batch size gets seeds (512 too:
# four runs).
SEEDS_FROM_BATCH_SIZE = 128

WARMUP_FRACTION = 0.1
MIN_WARMUP_STEPS = 20
ABLATION_BATCH_SIZE = 4096
ABLATION_WARMUP_FRACTION = 0.25

# The bias/normalisation rule (see the module docstring): True excludes every
# leaf with ndim <= 1 from the trust ratio and the weight decay; False adapts
# and decays it like the weights (Algorithm 1).
EXCLUDE_BIAS_AND_NORM = False

# Study 2, Q1 (budget): is LARS's loss at the largest batches step
# starvation? The same design at 4x the epochs, where the 20-epoch study
# failed the claim; both optimizers' learning rates re-tuned there on a grid
# of factors of the 20-epoch selection, and an epoch-matched reference R80.
BUDGET_EPOCHS = 80.0
BUDGET_POINTS = {"A": (128, 4096, 8192), "B": (128, 8192)}  # in run order
# x the 20-epoch selection of the same (model, batch, optimizer): five values
# spaced by 2, centred on it; three at the reference batch (R80).
BUDGET_FACTORS = (1 / 4, 1 / 2, 1.0, 2.0, 4.0)
BUDGET_REFERENCE_FACTORS = (1 / 2, 1.0, 2.0)
# Study 2, Q2 (a tuned baseline, Nado et al. 2021): at the large batches,
# 20 epochs, SGD with Nesterov momentum, LARS and LAMB get the same search:
# both warm-ups x five learning rates (x BASELINE_FACTORS of a centre), each
# warm-up's grid tuned with the edge-extension rule; the best trial by
# validation is selected and seeds 1 and 2 run there. Centres: LARS and SGD
# at the first study's selection (SGD's was heavy-ball, the same momentum
# 0.9); LAMB at LARS's selected relative step (gamma * trust coefficient),
# since LAMB's learning rate is its relative step per layer.
BASELINE_POINTS = (("A", 4096), ("A", 8192), ("B", 4096), ("B", 8192))
BASELINE_OPTIMIZERS = ("lars", "sgd", "lamb")  # sgd: Nesterov momentum
BASELINE_WARMUP_FRACTIONS = (0.1, 0.3)
BASELINE_FACTORS = (1 / 4, 1 / 2, 1.0, 2.0, 4.0)
LARS_TRUST_COEFFICIENT = default.get_config().lars.trust_coefficient  # the paper's

# Study 3: is it the per-layer trust ratio, or just a bounded step? At
# A/8192 (no BatchNorm), 20 and then 80 epochs, four arms get the same search:
# RATIO_FACTORS x a centre, tuned with the edge-extension rule, then seeds 1
# and 2 at each arm's best. Arms: LARS (per-layer ratio); the same chain with
# one ratio for the whole network; Nesterov SGD with the gradient's global
# norm clipped to RATIO_CLIP_NORM (a bounded step, no ratio); plain Nesterov.
# Warm-up: Q2's selection at A/8192 (the LARS arms LARS's, the SGD arms
# Nesterov's). Centres: Q2's selected learning rates at 20 epochs, the
# 20-epoch selection of the same arm at 80.
RATIO_POINT = ("A", 8192)
RATIO_EPOCHS = (EPOCHS, BUDGET_EPOCHS)  # in run order
RATIO_ARMS = ("lars", "lars_global", "sgd_clip", "sgd")
RATIO_FACTORS = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0)
# The field's default clip (timm's Lamb, BERT). Q2's Nesterov run at A/8192
# (lr 0.05) has a gradient norm of 19 at step 1, above 1 until about step 30
# (27 % of its steps), 0.4 at the median: the clip bounds the early steps.
RATIO_CLIP_NORM = 1.0

# Collapsed: a run that did not diverge but ended below half the best final
# validation accuracy of its cell (study, model, batch, epochs), or with a
# final training-split loss within 5 % of ln 10 (a guess among 10 classes).
# A failure, like a diverged one, when selecting.
COLLAPSED_FRACTION_OF_BEST = 0.5
COLLAPSED_LOSS = 0.95 * 2.302585

# Every quarter epoch; checkpoints every 2 epochs (a killed run loses less).
EVAL_EVERY_EPOCHS = 0.25
CHECKPOINT_EVERY_EPOCHS = 2.0


def num_steps(batch_size: int, epochs: float = EPOCHS) -> int:
  """Steps of a run: ``epochs`` epochs counted in examples."""
  return max(1, round(epochs * (TRAIN_EXAMPLES - VALIDATION_HOLDOUT) / batch_size))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """One run: ``arg`` = "MODEL[,OPTIMIZER,BATCH,LR[,SEED]]" (default A,lars,4096,12.5)."""
  fields = (arg or "A").split(",")
  model = fields[0]
  optimizer, batch_size, learning_rate, seed = "lars", 4096, 12.5, 0
  if len(fields) > 1:
    optimizer, batch_size, learning_rate = (
        fields[1], int(fields[2]), float(fields[3]))
  if len(fields) > 4:
    seed = int(fields[4])
  return run_config(model, optimizer, batch_size, learning_rate, seed)


def run_config(model: str, optimizer: str, batch_size: int,
               learning_rate: float, seed: int = 0, *,
               warmup_fraction: float = WARMUP_FRACTION,
               epochs: float = EPOCHS,
               exclude_bias_and_norm: bool = EXCLUDE_BIAS_AND_NORM,
               nesterov: bool = False) -> ml_collections.ConfigDict:
  """The config of one run of the study (the default config, overridden)."""
  if model not in MODELS:
    raise ValueError(f"Unknown study model {model!r}; valid: {sorted(MODELS)}.")
  valid = BASELINE_OPTIMIZERS + RATIO_ARMS
  if optimizer not in valid:
    raise ValueError(f"Unknown optimizer {optimizer!r}; valid: {valid}.")
  config = default.get_config()
  config.data.validation_holdout = VALIDATION_HOLDOUT
  config.data.validation_seed = 0

  config.model = MODELS[model]["model"]
  config.model_kwargs = ml_collections.ConfigDict(dict(
      use_batch_norm=MODELS[model]["use_batch_norm"], init_scheme="fan_in"))
  config.batch_norm_group_size = (
      BATCH_NORM_GROUP_SIZE if MODELS[model]["use_batch_norm"] else 0)
  config.seed = seed

  config.optimizer = "sgd" if optimizer == "sgd_clip" else optimizer
  config.clip_gradient_norm = RATIO_CLIP_NORM if optimizer == "sgd_clip" else 0.0
  config.nesterov = nesterov
  config.exclude_bias_and_norm = exclude_bias_and_norm

  config.global_batch_size = batch_size
  config.eval_batch_size = 1000
  config.base_learning_rate = learning_rate  # the peak LR itself
  config.base_batch_size = REFERENCE_BATCH_SIZE
  config.lr_scaling = "none"
  config.num_epochs = epochs
  config.num_train_steps = num_steps(batch_size, epochs)
  config.warmup_epochs = 0.0
  config.warmup_fraction = warmup_fraction
  config.min_warmup_steps = MIN_WARMUP_STEPS

  config.log_every_steps = 50
  config.log_trust_ratios = False
  config.eval_every_epochs = EVAL_EVERY_EPOCHS
  config.checkpoint_every_steps = num_steps(batch_size, CHECKPOINT_EVERY_EPOCHS)
  config.checkpoints_to_keep = 2
  # The loss over the whole training split at the end, in evaluation mode.
  config.evaluate_train_split = True
  common.metrics_files_only(config)
  return config

