"""Pieces shared by several configs; each sets only what differs from default.py."""
import ml_collections

import lars_optax


def metrics_files_only(config: ml_collections.ConfigDict) -> None:
  """No TensorBoard events, progress bar or plot: runs driven by a script or a
  test, whose results are metrics.jsonl and final_metrics.json."""
  config.tensorboard = False
  config.progress_bar = False
  config.plot = False


def imagenet(config: ml_collections.ConfigDict) -> None:
  """ImageNet as the paper trains on it, for the ImageNet recipes.

  The data: 224x224 random-resized crops and flips of the variable-size
  JPEGs, decoded on the fly. ``data.manual_dir`` must be the folder with
  ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (or its parent with an
  imagenet2012/ subfolder).

  The training: LARS as in default.py with the peak LR given directly
  (``lr_scaling="none"``), BatchNorm statistics per device as in the paper's
  runs and the MLPerf reference, compute in bfloat16 (params, gradients and
  LARS state stay float32: what GPUs and TPUs train ResNet-50 in), and a train
  record every 50 steps.
  """
  config.data.name = "imagenet2012"
  config.data.eval_split = "validation"
  config.data.cache = False
  config.data.image_size = 224
  config.data.prefetch = 2
  config.lr_scaling = "none"  # base_learning_rate is the peak LR
  config.batch_norm = "per_device"
  config.model_dtype = "bfloat16"
  config.log_every_steps = 50


def mlperf_schedule(config: ml_collections.ConfigDict, global_batch_size: int) -> None:
  """Batch size and the MLPerf LARS table's ResNet-50 schedule for it, 90 epochs."""
  config.global_batch_size = global_batch_size
  preset = lars_optax.mlperf_resnet50_lars(global_batch_size)
  config.base_learning_rate = preset.peak_learning_rate
  config.warmup_epochs = float(preset.warmup_epochs)
  config.end_learning_rate = preset.end_learning_rate
  config.power = preset.power
  config.num_epochs = 90.0
