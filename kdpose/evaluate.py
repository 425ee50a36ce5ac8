"""Re-evaluates a checkpoint of a run: ``python -m kdpose.evaluate --workdir DIR [--split test]``.

Rebuilds the models from ``DIR/config.json``, restores the stage's latest (or ``--step``)
checkpoint, prints the per-category table and the shape-bootstrap intervals, and writes
``DIR/eval/<stage>_<dataset>_<split>_step<N>.json`` (the report of the eval filter's records,
with the unfiltered split's beside it) and the per-record predictions beside it (``.npz``).
``--dataset_config configs/pix3d_eval.py`` evaluates on another dataset (its ``dataset`` block
replaces the run's).

``python -m kdpose.evaluate --compare RUN_A RUN_B [--stage, --split, --step, --dataset_config]``
pairs two runs on the same records: A, B and A - B with paired 95% intervals (the same resampled
shapes for both), printed and written to ``RUN_A/eval/compare_<stage>_<split>_vs_<B>.json``.
Each run's predictions come from its final evaluation's file, else from evaluating it here.
"""

from __future__ import annotations

import functools
import os

import jax
import ml_collections
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from kdpose import checkpoint, intervals, metrics, run_config, sharding, stages, state, steps
from kdpose.data import registry
from kdpose.trainers import evaluation, inputs

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Flags of the command line only, so importing this module defines none."""
  flags.DEFINE_string("workdir", None, "A training run's workdir.")
  flags.DEFINE_bool("compare", False, "Compare two runs: --compare RUN_A RUN_B (their workdirs).")
  flags.DEFINE_string("split", "test", "Split to evaluate.")
  flags.DEFINE_enum("stage", "student", ["teacher", "student"], "Which model to evaluate.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  config_flags.DEFINE_config_file("dataset_config", None,
                                  "Optional config whose `dataset` block replaces the run's.")


def evaluate_checkpoint(workdir: str, stage: str, split: str, step: int | None = None,
                        dataset: ml_collections.ConfigDict | None = None,
                        swap_shapes: bool = False) -> tuple[dict, dict]:
  """Viewpoint report and predictions of ``stage``'s checkpoint on ``split`` of the run's
  dataset, or of ``dataset`` (a config ``dataset`` block) when given, as
  ``evaluation.evaluate_views``: the eval filter's records, the report also holding the
  unfiltered split's. ``swap_shapes`` gives the teacher other samples' point clouds
  (``steps.eval_step``)."""
  if swap_shapes and stage != "teacher":
    raise ValueError(f"swap_shapes needs the teacher (it sees shapes), not the {stage}.")
  config = run_config.load_run_config(workdir)
  if dataset is not None:
    config.dataset = dataset
  mesh = sharding.make_mesh()
  builder = registry.prepare(config.dataset)
  headline, all_views = (
      inputs.eval_splits(builder, config.dataset, [split], all_views=every)[split]
      for every in (False, True))
  model, _, _, init_fn = stages.BUILDERS[stage](config)
  abstract, _ = state.abstract_state(init_fn, mesh)
  checkpoints = checkpoint.StageCheckpoints(os.path.join(workdir, stage, "checkpoints"),
                                            read_only=True)
  restored, _ = checkpoints.restore(abstract, step)
  checkpoints.close()
  eval_step = jax.jit(functools.partial(steps.eval_step, model=model,
                                        options=stages.STEP_OPTIONS[stage](config),
                                        uses_points=stage == "teacher",
                                        swap_shapes=swap_shapes))
  report, predictions = evaluation.evaluate_views(
      eval_step, restored.variables(), headline, all_views,
      global_batch_size=config.eval_batch_size, mesh=mesh)
  report["step"] = int(restored.step)
  return report, predictions


def write_evaluation(workdir: str, stage: str, split: str,
                     dataset: ml_collections.ConfigDict | None, report: dict, predictions: dict
                     ) -> str:
  """Writes ``evaluate_checkpoint``'s report and predictions under ``workdir/eval``; returns
  the report's path (the predictions lie beside it, ``evaluation.predictions_path``)."""
  dataset_name = (dataset or run_config.load_run_config(workdir).dataset).name
  path = os.path.join(workdir, "eval", f"{stage}_{dataset_name}_{split}_step{report['step']}.json")
  evaluation.write_report(report, path)
  evaluation.write_predictions(predictions, evaluation.predictions_path(path))
  return path


def run_predictions(workdir: str, stage: str, split: str, step: int | None = None,
                    dataset: ml_collections.ConfigDict | None = None) -> tuple[dict, str]:
  """Per-record predictions of a run's ``stage`` on ``split`` and the file they are in: those
  its final evaluation saved (``eval/<stage>_<split>.npz``) when neither ``step`` nor
  ``dataset`` is asked for and the file exists, else ``evaluate_checkpoint``'s, written here."""
  saved = evaluation.predictions_path(evaluation.report_path(workdir, stage, split))
  if step is None and dataset is None and epath.Path(saved).exists():
    return evaluation.load_predictions(saved), saved
  report, predictions = evaluate_checkpoint(workdir, stage, split, step, dataset)
  path = write_evaluation(workdir, stage, split, dataset, report, predictions)
  return predictions, evaluation.predictions_path(path)


def compare_runs(workdir_a: str, workdir_b: str, stage: str, split: str, step: int | None = None,
                 dataset: ml_collections.ConfigDict | None = None) -> dict:
  """Run A against run B on the same records (``run_predictions`` of each):
  ``{"a", "b": the workdirs, "files": their predictions files, "stage", "split", "intervals":
  evaluation.compare_predictions(A, B)}``."""
  (a, file_a), (b, file_b) = (run_predictions(w, stage, split, step, dataset)
                              for w in (workdir_a, workdir_b))
  return {"a": workdir_a, "b": workdir_b, "files": [file_a, file_b], "stage": stage,
          "split": split, "intervals": evaluation.compare_predictions(a, b, (file_a, file_b))}


def _compare(run_a: str, run_b: str, dataset: ml_collections.ConfigDict | None) -> None:
  comparison = compare_runs(run_a, run_b, FLAGS.stage, FLAGS.split, FLAGS.step, dataset)
  name_b = os.path.basename(os.path.normpath(run_b))
  path = os.path.join(run_a, "eval", f"compare_{FLAGS.stage}_{FLAGS.split}_vs_{name_b}.json")
  evaluation.write_report(comparison, path)
  print(intervals.format_paired(comparison["intervals"],
                                f"{FLAGS.stage} on {FLAGS.split}: A = {run_a}, B = {run_b}"))
  logging.info("Wrote %s", path)


def main(argv) -> None:
  dataset = FLAGS.dataset_config.dataset if FLAGS.dataset_config else None
  if FLAGS.compare:
    if len(argv) != 3 or FLAGS.workdir:
      raise app.UsageError("--compare takes two workdirs and no --workdir: --compare RUN_A RUN_B.")
    _compare(argv[1], argv[2], dataset)
    return
  if not FLAGS.workdir or len(argv) > 1:
    raise app.UsageError("Give --workdir (one run), or --compare RUN_A RUN_B.")
  report, predictions = evaluate_checkpoint(FLAGS.workdir, FLAGS.stage, FLAGS.split, FLAGS.step,
                                            dataset)
  path = write_evaluation(FLAGS.workdir, FLAGS.stage, FLAGS.split, dataset, report, predictions)
  print(metrics.format_report(report, f"{FLAGS.stage} on {FLAGS.split} (step {report['step']})"))
  print(intervals.format_intervals(report["intervals"]))
  print(intervals.format_intervals(report["all_views"]["intervals"], "all views"))
  logging.info("Wrote %s", path)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
