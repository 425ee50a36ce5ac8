"""The training loop both stages share: resume, step, log, check, checkpoint, evaluate."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from clu import metric_writers
from clu import metrics as clu_metrics
from etils import epath
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kdpose import checkpoint, intervals, metrics, plots, sharding
from kdpose import state as state_lib
from kdpose.data import pipeline, registry
from kdpose.trainers import evaluation, inputs, preemption
from kdpose.trainers import progress as progress_lib


@dataclasses.dataclass
class Stage:
  """What differs between the teacher and the student stage.

  Attributes:
    name: "teacher" or "student"; names the subdirectories of the workdir.
    config: the stage's config block (batch_size, num_steps, log/eval/checkpoint intervals).
    init_fn: rng -> a fresh TrainState.
    train_step: jitted (state, global batch, rng) -> (state, metrics).
    eval_step: jitted (variables, global batch) -> predictions (see steps.eval_step).
    train_data: the filtered training split.
    eval_data: split name -> filtered split for evaluation.
    later_steps: training steps of the stages that run after this one (for the run's ETA).
    warm_up: a fresh state -> the state with warmed-up heads (``head_warmup.warm_up``), run
      before the first step when ``config.head_warmup.steps`` > 0.
  """

  name: str
  config: ConfigDict
  init_fn: Callable[[jax.Array], state_lib.TrainState]
  train_step: Callable
  eval_step: Callable
  train_data: pipeline.SplitData
  eval_data: dict[str, pipeline.SplitData]
  later_steps: int = 0
  warm_up: Callable[[state_lib.TrainState], state_lib.TrainState] | None = None


def _scalar_name(key: str) -> str:
  return key if key.startswith("kd/") else f"train/{key}"


def _check_finite(history: list[tuple[int, dict]], stage: str, latest_checkpoint: int | None):
  """Raises naming the first step whose loss is not finite and whose update went in; warns
  about each step whose update was skipped (stage config ``skip_nonfinite``)."""
  for step, values in history:
    if values.get("skipped_updates"):
      logging.warning("%s stage: step %d skipped its update (loss %s, a non-finite gradient).",
                      stage, step, values["loss"])
    elif not np.isfinite(values["loss"]):
      raise FloatingPointError(
          f"{stage} stage: non-finite loss {values['loss']} at step {step}. Nothing after it was "
          f"saved; the last checkpoint is step {latest_checkpoint}. Lower the learning rate, "
          "check the input data, or skip such updates (skip_nonfinite=True in the stage config).")


def _flush_metrics(pending: list[tuple[int, Any]], writer, stage: Stage,
                   checkpoints: checkpoint.StageCheckpoints) -> None:
  """Fetches the pending step metrics, checks them, writes their mean over the steps whose
  update went in (and the number of skipped updates)."""
  if not pending:
    return
  history = [(step, jax.device_get(values)) for step, values in pending]
  _check_finite(history, stage.name, checkpoints.latest_step())
  writer.write_scalars(history[-1][0], logged_means([v for _, v in history]))
  pending.clear()


def logged_means(values: list[dict[str, Any]]) -> dict[str, float]:
  """The scalars logged for a run of steps: each step metric averaged (``clu.metrics.Average``)
  over the steps whose update went in (over all of them if none did), and
  ``train/skipped_updates``, the number of skipped updates, when the steps count them.

  ``values``: the steps' metrics, scalars by name, in step order."""
  skipped = np.array([bool(v.get("skipped_updates")) for v in values])
  mask = ~skipped if not skipped.all() else np.ones_like(skipped)
  means = {_scalar_name(k): float(clu_metrics.Average.from_model_output(
      np.array([v[k] for v in values], np.float32), mask=mask).compute()) for k in values[0]}
  if "skipped_updates" in values[0]:
    means["train/skipped_updates"] = float(sum(v["skipped_updates"] for v in values))
  return means


def evaluate(stage: Stage, state: state_lib.TrainState, workdir: str, mesh: Mesh, writer,
             splits: list[str], batch_size: int, *,
             all_views: dict[str, pipeline.SplitData] | None = None) -> dict[str, dict]:
  """Evaluates ``state`` on the (filtered) ``splits``.

  ``all_views`` (split -> the split unfiltered) makes it the final evaluation: the reports also
  hold ``"all_views"``, and it writes ``eval/<stage>_<split>.json``, the per-record predictions
  beside it (``.npz``) and the plots. Without, a periodic evaluation: nothing is written.
  """
  reports, step = {}, int(state.step)
  for split in splits:
    data = stage.eval_data[split]
    if all_views is None:
      report, predictions = evaluation.evaluate_split(
          stage.eval_step, state.variables(), data, global_batch_size=batch_size, mesh=mesh)
    else:
      report, predictions = evaluation.evaluate_views(
          stage.eval_step, state.variables(), data, all_views[split],
          global_batch_size=batch_size, mesh=mesh)
    report["step"] = step
    writer.write_scalars(step, evaluation.report_scalars(report, f"eval/{split}"))
    if all_views is not None and jax.process_index() == 0:
      path = evaluation.report_path(workdir, stage.name, split)
      evaluation.write_report(report, path)
      evaluation.write_predictions(predictions, evaluation.predictions_path(path))
      written = plots.write_evaluation_plots(
          report, predictions, plots.record_crops(data), os.path.join(workdir, "eval"),
          f"{stage.name}_{split}", categories=data.categories)
      writer.write_images(step, {f"eval/{split}/{name}": plot.image[None]
                                 for name, plot in written.items()})
    reports[split] = report
  return reports


def _restore_or_init(stage: Stage, seed: int, mesh: Mesh, checkpoints: checkpoint.StageCheckpoints):
  """Resume order: this stage's latest checkpoint in the workdir that reads back (damaged ones
  after it are set aside), else, only where it has none, a fresh init (with the pretrained
  encoder weights, if the model config names them, and warmed-up heads, if the stage's
  ``head_warmup.steps`` asks for them). Checkpoints none of which reads back are an error
  (``checkpoint.DamagedCheckpointError``), never a fresh start over them."""
  if checkpoints.latest_step() is None:
    state = state_lib.create_sharded_state(stage.init_fn, jax.random.key(seed), mesh)[0]
    state = state_lib.with_pretrained_encoder(state, stage.config.model)
    if stage.warm_up is not None and stage.config.get("head_warmup", {}).get("steps", 0):
      state = stage.warm_up(state)
    return state
  abstract, _ = state_lib.abstract_state(stage.init_fn, mesh)
  state, meta = checkpoints.restore(abstract)
  logging.info("%s: resumed from step %d (%s).", stage.name, int(state.step), meta)
  return state


def _log_shard(stage: str, step: int, records: np.ndarray) -> None:
  """Logs the records ``[b]`` (indices in the split) that this process read for ``step``: with
  several processes, each reads its own part of every global batch."""
  logging.info("%s: process %d/%d reads records %s of step %d's global batch.", stage,
               jax.process_index(), jax.process_count(), records.tolist(), step)


def train(stage: Stage, config: ConfigDict, workdir: str, mesh: Mesh, writer
          ) -> state_lib.TrainState:
  """Trains ``stage`` to ``stage.config.num_steps``, resuming from its own checkpoints.

  Raises ``preemption.Preempted`` after SIGTERM or SIGINT, once the step it came during (or the
  next) is saved.
  """
  cfg = stage.config
  checkpoints = checkpoint.StageCheckpoints(os.path.join(workdir, stage.name, "checkpoints"),
                                            max_to_keep=cfg.max_to_keep)
  seed = config.seed + (0 if stage.name == "teacher" else 1)
  state = _restore_or_init(stage, seed, mesh, checkpoints)
  start = int(state.step)
  if start >= cfg.num_steps:
    logging.info("%s: already trained (%d steps).", stage.name, start)
    checkpoints.close()
    return state
  loader = pipeline.training_loader(stage.train_data, config.dataset)
  batches = pipeline.train_batches(
      loader, global_batch_size=cfg.batch_size, seed=seed, start_step=start,
      num_steps=cfg.num_steps, process_index=jax.process_index(),
      process_count=jax.process_count())
  progress = progress_lib.StageProgress(stage.name, cfg.num_steps, stage.later_steps,
                                       writer.write_scalars)
  step_rng, pending = jax.random.key(seed + 1000), []
  with preemption.StopSignals() as signals:
    try:
      for step in range(start + 1, cfg.num_steps + 1):
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          batch = next(batches)
          records = batch.pop("index")
          if step == start + 1:
            _log_shard(stage.name, step, records)
          batch = sharding.host_to_global(batch, mesh)
          state, step_metrics = stage.train_step(state, batch, step_rng)
        pending.append((step, step_metrics))
        progress(step)
        stop = signals.stop_requested()
        save = step % cfg.checkpoint_every == 0 or step == cfg.num_steps or stop
        if save or step % cfg.log_every == 0:
          _flush_metrics(pending, writer, stage, checkpoints)
        if save:
          checkpoints.save(step, state, {"stage": stage.name, "step": step})
        if stop:
          raise preemption.Preempted(stage.name, step, signals.cause())
        if cfg.eval_every and step % cfg.eval_every == 0 and step != cfg.num_steps:
          evaluate(stage, state, workdir, mesh, writer, [config.dataset.eval_splits[0]],
                   config.eval_batch_size)
    finally:
      loader.close()
      checkpoints.close()  # waits for the last save (also the one of a preempted step)
      writer.flush()
  return state


def make_writer(workdir: str, stage: str):
  """TensorBoard writer under ``workdir/tensorboard/<stage>``; only process 0 writes files."""
  return metric_writers.create_default_writer(
      os.path.join(workdir, "tensorboard", stage), just_logging=jax.process_index() > 0)


_REPORT_KEYS = {"intervals", "all_views", "symmetric"}


def _saved_reports(workdir: str, stage: str, splits, step: int) -> dict[str, dict] | None:
  """The JSON reports of ``step`` if every split has one in today's form (intervals, all-views
  report, symmetric groups and the predictions file), else None: older reports are redone."""
  reports = {}
  for split in splits:
    path = evaluation.report_path(workdir, stage, split)
    if not (epath.Path(path).exists()
            and epath.Path(evaluation.predictions_path(path)).exists()):
      return None
    reports[split] = json.loads(epath.Path(path).read_text())
    if reports[split].get("step") != step or not _REPORT_KEYS <= set(reports[split]):
      return None
  return reports


def run_stage(stage: Stage, config: ConfigDict, workdir: str, mesh: Mesh) -> dict[str, dict]:
  """Trains the stage (or resumes it), then evaluates it on every eval split once.

  A rerun of a finished stage only reports the saved evaluation.
  """
  writer = make_writer(workdir, stage.name)
  state = train(stage, config, workdir, mesh, writer)
  splits = list(config.dataset.eval_splits)
  reports = _saved_reports(workdir, stage.name, splits, int(state.step))
  if reports is None:
    all_views = inputs.eval_splits(registry.prepare(config.dataset), config.dataset, splits,
                                   all_views=True)
    reports = evaluate(stage, state, workdir, mesh, writer, splits, config.eval_batch_size,
                       all_views=all_views)
  writer.close()
  for split, report in reports.items():
    title = f"{stage.name} on {split} (step {report['step']})"
    logging.info("\n%s\n%s\n%s", metrics.format_report(report, title),
                 intervals.format_intervals(report["intervals"]),
                 intervals.format_intervals(report["all_views"]["intervals"], "all views"))
  return reports

