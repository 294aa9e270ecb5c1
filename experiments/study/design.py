r"""The large-batch studies' design: every number the plan, driver and report use.

Each choice and its reason is in docs/study_design.md. One run of a study on
its own (``get_config("MODEL[,OPTIMIZER,BATCH,LR[,SEED]]")``):

  python -m experiments.main \
      --config=experiments/study/design.py:A,lars,4096,12.5,0 \
      --workdir=runs/one --config.data.manual_dir=../shared/datasets
"""
import ml_collections

from experiments.configs import common
from experiments.configs import default

# Study 1: LARS and SGD-momentum over batch sizes, 20 epochs.
MODELS = {  # letter -> how the CSV names it and what differs
    "A": dict(model="cnn", batch_norm="none", use_batch_norm=False),
    "B": dict(model="cnn", batch_norm="groups_of_128", use_batch_norm=True),
}
BATCH_NORM_GROUP_SIZE = 128
BATCH_SIZES = {"A": (128, 512, 1024, 2048, 4096, 8192), "B": (128, 1024, 4096, 8192)}
REFERENCE_BATCH_SIZE = 128
GRID_ORDER = {"A": (128, 4096, 8192, 2048, 1024, 512), "B": (128, 4096, 8192, 1024)}
TRAIN_EXAMPLES = 60_000
VALIDATION_HOLDOUT = 5_000
EPOCHS = 20.0
OPTIMIZERS = ("lars", "sgd")
LARS_LEARNING_RATES = (3.125, 6.25, 12.5, 25.0, 50.0)  # gamma
SGD_LEARNING_RATES = (0.025, 0.05, 0.1, 0.2, 0.4)  # at batch 128
SGD_SCALE_FACTORS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)  # x (lr_128 * B / 128)
EDGE_FACTOR = 2.0
MAX_EDGE_EXTENSIONS = 5  # per side
NO_LEARNING_BELOW = 0.2  # a grid's best below this: its optimum is below it
SEEDS = (0, 1, 2)
SEEDS_FROM_BATCH_SIZE = 128
WARMUP_FRACTION = 0.1
MIN_WARMUP_STEPS = 20
ABLATION_BATCH_SIZE = 4096
ABLATION_WARMUP_FRACTION = 0.25
EXCLUDE_BIAS_AND_NORM = False  # biases and BN parameters adapted (Algorithm 1)

# Study 2, Q1 (budget): 80 epochs, centred on study 1's selections.
BUDGET_EPOCHS = 80.0
BUDGET_POINTS = {"A": (128, 4096, 8192), "B": (128, 8192)}  # in run order
BUDGET_FACTORS = (1 / 4, 1 / 2, 1.0, 2.0, 4.0)
BUDGET_REFERENCE_FACTORS = (1 / 2, 1.0, 2.0)
# Study 2, Q2 (a tuned baseline): the same search for Nesterov, LARS and LAMB.
BASELINE_POINTS = (("A", 4096), ("A", 8192), ("B", 4096), ("B", 8192))
BASELINE_OPTIMIZERS = ("lars", "sgd", "lamb")  # sgd: Nesterov momentum
BASELINE_WARMUP_FRACTIONS = (0.1, 0.3)
BASELINE_FACTORS = (1 / 4, 1 / 2, 1.0, 2.0, 4.0)
LARS_TRUST_COEFFICIENT = default.get_config().lars.trust_coefficient  # the paper's

# Study 3: the per-layer ratio against one ratio and a bounded step.
RATIO_POINT = ("A", 8192)
RATIO_EPOCHS = (EPOCHS, BUDGET_EPOCHS)  # in run order
RATIO_ARMS = ("lars", "lars_global", "sgd_clip", "sgd")
RATIO_CENTRES = {"lars": "lars", "lars_global": "lars", "sgd_clip": "sgd", "sgd": "sgd"}
RATIO_FACTORS = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0)
RATIO_CLIP_NORM = 1.0

# Collapsed: below this fraction of its cell's best validation accuracy, or a
# training-split loss of at least COLLAPSED_LOSS (5 % below ln 10).
COLLAPSED_FRACTION_OF_BEST = 0.5
COLLAPSED_LOSS = 0.95 * 2.302585
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
  config.model_kwargs = ml_collections.ConfigDict(dict(
      use_batch_norm=MODELS[model]["use_batch_norm"], init_scheme="fan_in"))
  config.update(dict(
      model=MODELS[model]["model"], seed=seed,
      batch_norm_group_size=BATCH_NORM_GROUP_SIZE if MODELS[model]["use_batch_norm"] else 0,
      optimizer="sgd" if optimizer == "sgd_clip" else optimizer,
      clip_gradient_norm=RATIO_CLIP_NORM if optimizer == "sgd_clip" else 0.0,
      nesterov=nesterov, exclude_bias_and_norm=exclude_bias_and_norm,
      global_batch_size=batch_size, eval_batch_size=1000,
      base_learning_rate=learning_rate,  # the peak LR itself
      base_batch_size=REFERENCE_BATCH_SIZE, lr_scaling="none", num_epochs=epochs,
      num_train_steps=num_steps(batch_size, epochs), warmup_epochs=0.0,
      warmup_fraction=warmup_fraction, min_warmup_steps=MIN_WARMUP_STEPS,
      log_every_steps=50, log_trust_ratios=False, eval_every_epochs=EVAL_EVERY_EPOCHS,
      checkpoint_every_steps=num_steps(batch_size, CHECKPOINT_EVERY_EPOCHS),
      checkpoints_to_keep=2,
      evaluate_train_split=True))  # the loss over the whole training split
  common.metrics_files_only(config)
  return config
