"""Re-evaluates a checkpoint of a run: ``python -m kdpose.evaluate --workdir DIR [--split test]``.

Rebuilds the models from ``DIR/config.json``, restores the stage's latest (or ``--step``)
checkpoint, prints the per-category table and writes
``DIR/eval/<stage>_<dataset>_<split>_step<N>.json``. ``--dataset_config configs/pix3d_eval.py``
evaluates on another dataset (its ``dataset`` block replaces the run's).
"""

from __future__ import annotations

import functools
import os

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from kdpose import checkpoint, metrics, run_config, sharding, state, steps
from kdpose.data import pipeline, registry
from kdpose.trainers import evaluation, student, teacher

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Flags of the command line only, so importing this module defines none."""
  flags.DEFINE_string("workdir", None, "A training run's workdir.")
  flags.DEFINE_string("split", "test", "Split to evaluate.")
  flags.DEFINE_enum("stage", "student", ["teacher", "student"], "Which model to evaluate.")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  config_flags.DEFINE_config_file("dataset_config", None,
                                  "Optional config whose `dataset` block replaces the run's.")
  flags.mark_flag_as_required("workdir")


_STAGE_MODULES = {"teacher": teacher, "student": student}


def evaluate_checkpoint(workdir: str, stage: str, split: str, step: int | None = None,
                        dataset: ml_collections.ConfigDict | None = None,
                        swap_shapes: bool = False) -> tuple[dict, dict]:
  """Viewpoint report and predictions of ``stage``'s checkpoint on ``split`` of the run's
  dataset, or of ``dataset`` (a config ``dataset`` block) when given. ``swap_shapes`` gives the
  teacher other samples' point clouds (``steps.eval_step``)."""
  if swap_shapes and stage != "teacher":
    raise ValueError(f"swap_shapes needs the teacher (it sees shapes), not the {stage}.")
  config = run_config.load_run_config(workdir)
  if dataset is not None:
    config.dataset = dataset
  mesh = sharding.make_mesh()
  builder = registry.prepare(config.dataset)
  data = pipeline.load_split(builder, split, config.dataset, filters=config.dataset.eval_filter)
  module = _STAGE_MODULES[stage]
  model, _, _, init_fn = module.build(config)
  abstract, _ = state.abstract_state(init_fn, mesh)
  checkpoints = checkpoint.StageCheckpoints(os.path.join(workdir, stage, "checkpoints"),
                                            read_only=True)
  restored, _ = checkpoints.restore(abstract, step)
  checkpoints.close()
  eval_step = jax.jit(functools.partial(steps.eval_step, model=model,
                                        options=module.step_options(config),
                                        uses_points=stage == "teacher",
                                        swap_shapes=swap_shapes))
  report, predictions = evaluation.evaluate_split(
      eval_step, restored.variables(), data, global_batch_size=config.eval_batch_size, mesh=mesh)
  report["step"] = int(restored.step)
  return report, predictions


def main(argv) -> None:
  del argv
  dataset = FLAGS.dataset_config.dataset if FLAGS.dataset_config else None
  report, _ = evaluate_checkpoint(FLAGS.workdir, FLAGS.stage, FLAGS.split, FLAGS.step, dataset)
  dataset_name = (dataset or run_config.load_run_config(FLAGS.workdir).dataset).name
  path = os.path.join(FLAGS.workdir, "eval",
                      f"{FLAGS.stage}_{dataset_name}_{FLAGS.split}_step{report['step']}.json")
  evaluation.write_report(report, path)
  print(metrics.format_report(report, f"{FLAGS.stage} on {FLAGS.split} (step {report['step']})"))
  logging.info("Wrote %s", path)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
