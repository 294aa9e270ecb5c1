"""The training job: ``train_and_evaluate(config, workdir)``.

Check the config, prepare the data, build the loop, restore the newest good
checkpoint, train with periodic evaluations and checkpoints, evaluate, and
write the metrics; it returns the final metrics. The data order is a pure
function of ``(config.seed, step)``, so a checkpoint needs only ``step`` to
resume the data stream exactly.

Optional fields (absent from ``configs/default.py``; the study sets them):
``data.validation_holdout > 0`` makes the periodic evaluations read held-out
validation examples and evaluates the test split once, at the end;
``eval_every_epochs > 0`` evaluates every that many epochs of examples;
``evaluate_train_split`` adds the loss and accuracy over the training split in
evaluation mode; ``warmup_fraction`` and ``min_warmup_steps`` lengthen the
warm-up.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
import tqdm
from absl import logging

from experiments import checkpoints
from experiments import interruption
from experiments import loops
from experiments import metrics
from experiments import models
from experiments import optimizers
from experiments.data import pipeline
from experiments.data import preparation
from experiments.data.datasets import DataConfig
from experiments.user_errors import ConfigError
from experiments.workdir import Workdir


def _choice(what: str, value: str, valid) -> None:
  if value not in valid:
    raise ConfigError(
        f"Unknown {what} {value!r}; valid {what}s are: {', '.join(sorted(valid))}."
    )


def validate_config(
    config: ml_collections.ConfigDict,
    *,
    num_devices: int,
    num_local_devices: int,
    process_count: int,
) -> None:
  """Raises ConfigError for a config that cannot run, naming the field.

  This and ``DataConfig.from_config`` (the data fields) report every mistake
  in the config before anything is compiled.
  """
  _choice("model", config.model, tuple(models.MODELS))
  _choice("optimizer", config.optimizer, optimizers.OPTIMIZERS)
  _choice("loop", config.loop, loops.LOOPS)
  _choice("batch_norm mode", config.batch_norm, loops.BATCH_NORM_MODES)
  _choice("lr_scaling rule", config.lr_scaling, optimizers.LR_SCALING_RULES)
  if config.optimizer == "lars_global" and config.exclude_bias_and_norm:
    raise ConfigError("config.optimizer='lars_global' adapts every leaf: set "
                      "config.exclude_bias_and_norm=False.")
  if config.clip_gradient_norm < 0:
    raise ConfigError("config.clip_gradient_norm must be >= 0 (0: no clipping), "
                      f"got {config.clip_gradient_norm}.")
  optimizers.check_config(config)
  if config.shard_params and config.loop != "jit":
    raise ConfigError("config.shard_params=True needs config.loop='jit' "
                      "(pmap keeps a full copy of the state on every device).")
  _check_batch_sizes(config, num_devices=num_devices,
                     num_local_devices=num_local_devices,
                     process_count=process_count)
  if config.num_epochs <= 0 and config.num_train_steps <= 0:
    raise ConfigError("Set config.num_epochs > 0 or config.num_train_steps > 0.")
  if config.checkpoint_every_steps < 0 or config.log_every_steps <= 0:
    raise ConfigError("config.checkpoint_every_steps must be >= 0 and "
                      "config.log_every_steps > 0.")
  _check_accumulation(config, num_devices)
  _check_batch_norm_groups(config, num_devices)


def _check_batch_sizes(config: ml_collections.ConfigDict, *, num_devices: int,
                       num_local_devices: int, process_count: int) -> None:
  """The global and evaluation batch sizes split evenly over the devices."""
  for field in ("global_batch_size", "eval_batch_size"):
    size = config[field] or config.global_batch_size
    if size <= 0:
      raise ConfigError(f"config.{field} must be positive, got {size}.")
    if size % num_devices:
      raise ConfigError(
          f"config.{field}={size} is not divisible by the number of devices "
          f"({num_devices}); use a multiple of {num_devices}.")
    if size % (process_count * num_local_devices):
      raise ConfigError(
          f"config.{field}={size} must split evenly over {process_count} "
          f"processes x {num_local_devices} local devices.")


def _check_accumulation(config: ml_collections.ConfigDict, num_devices: int
                        ) -> None:
  """grad_accum_steps divides the per-device batch."""
  accum_steps = config.grad_accum_steps
  if accum_steps < 1 or config.global_batch_size % (num_devices * accum_steps):
    raise ConfigError(
        f"config.grad_accum_steps={accum_steps} must be >= 1 and divide the "
        f"per-device batch: config.global_batch_size={config.global_batch_size}"
        f" is not a multiple of {num_devices} devices x {accum_steps}.")


def _check_batch_norm_groups(config: ml_collections.ConfigDict,
                             num_devices: int) -> None:
  """batch_norm_group_size fits the loop, the batch and the micro-batch."""
  accum_steps = config.grad_accum_steps
  group_size = config.batch_norm_group_size
  if group_size:
    if config.loop != "jit" or config.batch_norm != "global":
      raise ConfigError("config.batch_norm_group_size needs config.loop='jit' "
                        "and config.batch_norm='global' (it sets the groups).")
    if config.global_batch_size % group_size:
      raise ConfigError(
          f"config.global_batch_size={config.global_batch_size} is not a "
          f"multiple of config.batch_norm_group_size={group_size}.")
    micro_batch = config.global_batch_size // (num_devices * accum_steps)
    if accum_steps > 1 and micro_batch % group_size:
      raise ConfigError(  # a group would mix examples of two devices' shards
          f"config.batch_norm_group_size={group_size} must divide the "
          f"per-device micro-batch ({config.global_batch_size} / "
          f"{num_devices} devices / {accum_steps} accumulation steps = "
          f"{micro_batch}).")


def eval_steps_by_epochs(every_epochs: float, num_train: int,
                         global_batch_size: int, total_steps: int) -> set[int]:
  """Steps in [1, total_steps) that first reach each multiple of ``every_epochs``.

  Epochs are counted in examples (``num_train`` examples each), so the
  evaluations fall at the same fractions of the data for every batch size.
  """
  steps_per_epoch = num_train / global_batch_size
  steps, k = set(), 1
  while (step := math.ceil(k * every_epochs * steps_per_epoch - 1e-9)) < total_steps:
    steps.add(max(step, 1))
    k += 1
  return steps


def evaluate(loop, state, config, data_config, info,
             subset: str = "eval") -> dict[str, float]:
  """Loss and accuracy on the eval split, or ``subset="validation"``/``"train"``."""
  batch_size = config.eval_batch_size or config.global_batch_size
  totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
  for batch in pipeline.eval_iterator(
      data_config, info, batch_size=batch_size,
      process_index=jax.process_index(), process_count=jax.process_count(),
      subset=subset):
    sums = loop.fetch(loop.eval_step(state, batch))
    for k in totals:
      totals[k] += sums[k]
  count = max(totals["count"], 1.0)
  return {"loss": totals["loss"] / count, "accuracy": totals["correct"] / count,
          "num_examples": totals["count"]}


def _eval_steps(config, info, steps_per_epoch: int, total_steps: int) -> set[int]:
  """The steps after which the periodic evaluation runs."""
  if config.eval_every_epochs > 0:  # by epochs of examples
    return eval_steps_by_epochs(config.eval_every_epochs, info.num_train,
                                config.global_batch_size, total_steps)
  every = steps_per_epoch if config.eval_every_steps < 0 else config.eval_every_steps
  return set(range(every, total_steps + 1, every)) if every else set()


def _restore(loop, run: Workdir, config):
  """(manager, start step, state): the newest good checkpoint, or a fresh state."""
  manager = checkpoints.create_manager(
      run.checkpoints, max_to_keep=config.checkpoints_to_keep)
  try:
    restored = checkpoints.restore_newest(manager, loop.abstract_canonical_state(),
                                          corrupt_dir=run.corrupt_checkpoints)
  except checkpoints.CheckpointError:
    manager.close()
    raise
  if restored is None:
    return manager, 0, loop.to_loop(loop.init_canonical_state())
  logging.info("Resuming from the checkpoint of step %d.", restored[0])
  return manager, restored[0], loop.to_loop(restored[1])


def _train(loop, state, config, data_config, info, *, start_step: int, manager,
           writer, train_log, stop) -> Any:
  """Steps start_step+1..total; evaluates, checkpoints; stops at a signal."""
  total_steps = loop.schedule.total_steps
  eval_steps = _eval_steps(config, info, loop.schedule.steps_per_epoch, total_steps)
  # With a validation holdout, the periodic evaluations use it.
  periodic = "validation" if info.num_validation else "eval"
  checkpoint_every = config.checkpoint_every_steps
  train_iter = pipeline.train_iterator(
      data_config, info, global_batch_size=config.global_batch_size,
      seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  pending = None
  for step in range(start_step + 1, total_steps + 1):
    state, step_metrics = loop.train_step(state, next(train_iter))
    if pending is not None:  # fetch the previous step while this one runs
      train_log.record(*pending)
    pending = (step, step_metrics)
    stopping = stop.after(step)
    do_checkpoint = (checkpoint_every and step % checkpoint_every == 0
                     or step == total_steps or stopping)
    do_eval = step in eval_steps
    if do_checkpoint or do_eval:
      train_log.record(*pending)
      pending = None
    # Evaluate before saving: a run killed after the checkpoint of `step`
    # has logged everything up to `step`, so the resumed run logs no gaps.
    if do_eval and step != total_steps:
      writer.write(step, periodic,
                   evaluate(loop, state, config, data_config, info, periodic))
    if do_checkpoint:
      checkpoints.save(manager, step, loop.to_canonical(state))
    if stopping:
      manager.wait_until_finished()
      raise interruption.Interrupted(
          f"stopped by {stop.requested.name} after step {step} of "
          f"{total_steps}; its checkpoint is in {manager.directory}. Run the "
          "same command again to resume.", stop.requested.value)
  return state


def _final_evaluations(loop, state, config, data_config, info, writer
                       ) -> dict[str, dict]:
  """Validation (with a holdout), test, and (optionally) the training split."""
  total_steps = loop.schedule.total_steps
  results = {}
  if info.num_validation:
    results["validation"] = evaluate(loop, state, config, data_config, info,
                                     "validation")
    writer.write(total_steps, "validation", results["validation"])
  results["eval"] = evaluate(loop, state, config, data_config, info)
  writer.write(total_steps, "eval", results["eval"])
  if config.evaluate_train_split:
    results["train"] = evaluate(loop, state, config, data_config, info, "train")
  return results


def _final_metrics(config, info, loop, state, train_log, results, *,
                   start_step: int, wall_time_s: float) -> dict[str, Any]:
  checksum, sha256 = metrics.params_checksum(
      loops.to_host(loop.to_canonical(state)["params"]))
  final = {
      "step": loop.schedule.total_steps,
      "dataset": info.name,
      "model": config.model,
      "optimizer": config.optimizer,
      "loop": config.loop,
      "batch_norm": config.batch_norm,
      "global_batch_size": config.global_batch_size,
      "peak_learning_rate": loop.schedule.peak_learning_rate,
      "num_devices": jax.device_count(),
      "num_processes": jax.process_count(),
      "train_loss": train_log.last.get("loss", float("nan")),
      "train_accuracy": train_log.last.get("accuracy", float("nan")),
      "test_loss": results["eval"]["loss"],
      "test_accuracy": results["eval"]["accuracy"],
      "params_checksum": checksum,
      "params_sha256": sha256,
      "resumed_from_step": start_step,
      "examples_per_sec": train_log.examples_per_sec(),
      "wall_time_s": wall_time_s,
  }
  if "train" in results:
    final["train_split_loss"] = results["train"]["loss"]
    final["train_split_accuracy"] = results["train"]["accuracy"]
  if "validation" in results:
    final["val_loss"] = results["validation"]["loss"]
    final["val_accuracy"] = results["validation"]["accuracy"]
  return final


def _write_outputs(config, info, run: Workdir, final: dict[str, Any]) -> None:
  """The final metrics and the training curves (process 0)."""
  with open(run.final_metrics, "w") as f:
    json.dump(final, f, indent=2)
  if config.plot:
    from experiments import plotting  # pylint: disable=g-import-not-at-top
    plotting.plot_training_curves(
        run.metrics, run.plot,
        title=f"{config.model} on {info.name}, {config.optimizer}, "
              f"batch {config.global_batch_size}")


def _logs(config, run: Workdir, loop, manager, *, start_step: int,
          is_chief: bool, start_time: float):
  """The run's metrics writer, progress bar and train log."""
  total_steps = loop.schedule.total_steps
  # A finished run that is started again evaluates again: replace that line.
  writer = metrics.MetricsWriter(run, start_step=start_step,
                                 tensorboard=config.tensorboard, enabled=is_chief,
                                 redo_eval_at_start=start_step >= total_steps)
  progress = tqdm.tqdm(total=total_steps, initial=start_step, unit="step",
                       disable=not (is_chief and config.progress_bar),
                       dynamic_ncols=True, desc="train")
  train_log = metrics.TrainLog(
      loop.fetch, writer, progress, log_every=config.log_every_steps,
      total_steps=total_steps, global_batch_size=config.global_batch_size,
      checkpoints_dir=os.path.abspath(run.checkpoints),
      last_saved_step=lambda: checkpoints.last_saved_step(manager),
      wall_time_s=lambda: writer.resumed_wall_time_s + time.time() - start_time)
  return writer, progress, train_log


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> dict[str, Any]:
  """Trains and evaluates; resumes from workdir's checkpoints; returns final metrics.

  Raises ``interruption.Interrupted`` after saving a checkpoint when the
  process gets SIGTERM or SIGINT, and ``interruption.ProcessLost`` when a
  collective fails because another process of the run is gone.
  """
  start_time = time.time()
  run = Workdir(workdir)
  data_config = DataConfig.from_config(config.data)
  validate_config(config, num_devices=jax.device_count(),
                  num_local_devices=jax.local_device_count(),
                  process_count=jax.process_count())
  info = preparation.prepare(data_config)
  steps_per_epoch = pipeline.steps_per_epoch(info, config.global_batch_size)
  is_chief = jax.process_index() == 0
  if is_chief:
    run.save_config(config)
  loop = loops.create_loop(
      config, info, optimizers.create_learning_rate_schedule(config, steps_per_epoch))
  total_steps = loop.schedule.total_steps
  logging.info("%s: %d train examples; %s, %s, %s loop on %d devices (%d "
               "processes); global batch %d; %d steps.", info.name,
               info.num_train, config.model, config.optimizer, config.loop,
               jax.device_count(), jax.process_count(),
               config.global_batch_size, total_steps)
  manager, start_step, state = _restore(loop, run, config)
  writer, progress, train_log = _logs(config, run, loop, manager,
                                      start_step=start_step, is_chief=is_chief,
                                      start_time=start_time)
  stop = interruption.StopSignals(multi_process=jax.process_count() > 1)
  lost = None
  try:
    with stop:
      state = _train(loop, state, config, data_config, info,
                     start_step=start_step, manager=manager, writer=writer,
                     train_log=train_log, stop=stop)
    progress.close()
    manager.wait_until_finished()
    results = _final_evaluations(loop, state, config, data_config, info, writer)
  except Exception as error:
    lost = interruption.lost_process(error, step=stop.step or start_step,
                                     checkpoints_dir=os.path.abspath(run.checkpoints))
    if lost is None:
      raise
    raise lost from None
  finally:
    progress.close()
    writer.close()
    if lost is None:  # a save under way would wait for the lost process
      manager.wait_until_finished()
      manager.close()
  final = _final_metrics(config, info, loop, state, train_log, results,
                         start_step=start_step,
                         wall_time_s=writer.resumed_wall_time_s + time.time() - start_time)
  if is_chief:
    _write_outputs(config, info, run, final)
  logging.info("Final metrics: %s", final)
  return final
