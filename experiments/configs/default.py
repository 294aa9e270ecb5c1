"""Default: a small CNN on Fashion-MNIST with LARS at global batch 4096.

5 epochs (70 steps of 4096 images), an evaluation on the test set every epoch,
metrics, TensorBoard events, a plot and checkpoints in the workdir (the
README's main job; `make train` runs the same):

  python -m experiments.main --config=experiments/configs/default.py \
      --workdir=runs/default --config.data.manual_dir=../shared/datasets

About a minute on a 2-core CPU; its time and accuracy are in
experiments/README.md. Peak LR 10 (2.5 per 256 examples, sqrt-scaled) after 1
warm-up epoch, poly-2 decay; biases and BatchNorm excluded from LARS; BatchNorm
over the global batch. The choices: docs/training.md, "Recipes".
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  _data(config)
  _model_and_parallelism(config)
  _optimizer(config)
  _batch_size_and_schedule(config)
  _bookkeeping(config)
  return config


def _data(config: ml_collections.ConfigDict) -> None:
  config.data = ml_collections.ConfigDict()
  config.data.name = "fashion_mnist"
  # None: tfds default (~/tensorflow_datasets). placeholder(str): a None that
  # --config.data.data_dir=... may override.
  config.data.data_dir = ml_collections.config_dict.placeholder(str)
  # Root with <name>/ folders of the original files (../shared/datasets).
  config.data.manual_dir = ml_collections.config_dict.placeholder(str)
  config.data.train_split = "train"  # tfds split spec, e.g. "train[:10%]"
  config.data.augment = True  # (no augmentation in the MNIST recipes)
  config.data.prefetch = 1  # batches prepared ahead (0: none)
  # None: the dataset's recipe decides (data/datasets.py): its test split
  # ("validation" for imagenet2012); a decoded in-memory cache except for
  # JPEG records; the images' own size; 1 thread with a cache or worker
  # processes, else min(8, cores); as many worker processes as cores for JPEG
  # records, else none.
  config.data.eval_split = ml_collections.config_dict.placeholder(str)
  config.data.cache = ml_collections.config_dict.placeholder(bool)
  config.data.image_size = ml_collections.config_dict.placeholder(int)
  config.data.read_threads = ml_collections.config_dict.placeholder(int)
  config.data.worker_processes = ml_collections.config_dict.placeholder(int)
  # Training examples held out as a validation set (0: none), chosen by
  # validation_seed whatever the training seed.
  config.data.validation_holdout = 0
  config.data.validation_seed = 0


def _model_and_parallelism(config: ml_collections.ConfigDict) -> None:
  config.model = "cnn"
  config.model_kwargs = ml_collections.ConfigDict()  # the model's own options
  config.model_dtype = "float32"  # compute dtype ("bfloat16" on GPUs/TPUs)
  config.seed = 0

  # Data parallelism.
  config.loop = "jit"  # "jit" | "pmap"
  config.batch_norm = "global"  # "global" | "per_device"
  config.shard_params = False  # jit only: FSDP-style params/opt-state sharding
  config.grad_accum_steps = 1  # micro-batches per optimizer step (loops.py)
  # > 0: BatchNorm over contiguous groups of this many examples (jit, global).
  config.batch_norm_group_size = 0


def _optimizer(config: ml_collections.ConfigDict) -> None:
  # Optimizer.
  # "lars" (ours) | "lars_global" (one trust ratio for the network) |
  # "optax_lars" | "sgd" (momentum) | "lamb"
  config.optimizer = "lars"
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 5e-4
  config.exclude_bias_and_norm = True
  config.clip_gradient_norm = 0.0  # > 0: gradients clipped to this global norm first
  config.lars = ml_collections.ConfigDict()
  config.lars.formula = "paper"  # "paper": ||g||+wd||w|| | "combined": ||g+wd w||
  config.lars.trust_coefficient = 0.001
  config.lars.eps = 0.0
  config.lars.trust_clip = False


def _batch_size_and_schedule(config: ml_collections.ConfigDict) -> None:
  # Batch size and learning-rate schedule (docs/training.md, "Recipes").
  config.global_batch_size = 4096
  config.eval_batch_size = 0  # 0: the global batch size
  config.base_learning_rate = 2.5
  config.base_batch_size = 256
  config.lr_scaling = "sqrt"  # "linear" | "sqrt" | "none"
  config.warmup_epochs = 1.0  # or longer, where the next two ask for more
  config.warmup_fraction = 0.0  # of the run's steps
  config.min_warmup_steps = 0
  config.num_epochs = 5.0
  config.num_train_steps = 0  # > 0 overrides num_epochs
  config.end_learning_rate = 0.0
  config.power = 2.0


def _bookkeeping(config: ml_collections.ConfigDict) -> None:
  # Bookkeeping.
  config.log_every_steps = 1
  config.log_trust_ratios = True  # per-layer lambda in the metrics (lars only)
  config.eval_every_steps = -1  # -1: every epoch; 0: only at the end
  config.eval_every_epochs = 0.0  # > 0: every this many epochs of examples instead
  config.evaluate_train_split = False  # the loss over the training split at the end
  config.checkpoint_every_steps = 50  # 0: only at the end
  config.checkpoints_to_keep = 3
  config.tensorboard = True
  config.progress_bar = True
  config.plot = True
