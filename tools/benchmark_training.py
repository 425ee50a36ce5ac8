r"""Benchmark of the training path: input pipeline, teacher step, student step with and
without distillation, evaluation step. Side-by-side timings in one process, so ratios hold
on a loaded machine.

  python tools/benchmark_training.py --config configs/default.py --steps 20
  python tools/benchmark_training.py --config configs/default.py:tiny --steps 5

Prints ms per step, images per second and the cost of distillation (student / baseline).
"""

from __future__ import annotations

import functools
import json
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from kdpose import sharding, state, steps
from kdpose.data import pipeline
from kdpose.trainers import inputs, loop, student, teacher

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/default.py", "Training config.")
flags.DEFINE_integer("steps", 20, "Timed steps per measurement (after 2 warm-up steps).")


def _time(fn, batches, num_steps: int) -> float:
  """Seconds per call of ``fn(batch)`` over ``num_steps`` calls, after two warm-up calls."""
  for batch in batches[:2]:
    jax.block_until_ready(fn(batch))
  start = time.perf_counter()
  for i in range(num_steps):
    out = fn(batches[i % len(batches)])
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / num_steps


def _train_step_timer(module, config, mesh, **frozen):
  """A function batch -> metrics running the stage's jitted step on a fresh state."""
  model, tx, schedule, init_fn = module.build(config)
  train_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(0), mesh)
  options = module.step_options(config)
  if module is teacher:
    jitted = loop.jit_train_step(functools.partial(
        steps.teacher_train_step, model=model, tx=tx, schedule=schedule, options=options),
        init_fn, mesh)
    call = lambda st, batch: jitted(st, batch, jax.random.key(1))
  else:
    jitted = loop.jit_train_step(functools.partial(
        steps.student_train_step, model=model, tx=tx, schedule=schedule, options=options,
        teacher=frozen.get("teacher")), init_fn, mesh, num_frozen=1)
    variables = frozen.get("variables", {})
    call = lambda st, batch: jitted(st, variables, batch, jax.random.key(1))
  holder = {"state": train_state}

  def run(batch):
    holder["state"], metrics = call(holder["state"], batch)
    return metrics

  return run


def main(argv) -> None:
  del argv
  config = FLAGS.config
  mesh = sharding.make_mesh()
  train_data, eval_data = inputs.load_data(config)
  batch_size = config.teacher.batch_size
  loader = pipeline.BatchLoader(train_data)
  host = list(pipeline.train_batches(loader, global_batch_size=batch_size, seed=0,
                                     start_step=0, num_steps=4))
  start = time.perf_counter()
  for _ in pipeline.train_batches(loader, global_batch_size=batch_size, seed=1, start_step=0,
                                  num_steps=FLAGS.steps):
    pass
  pipeline_s = (time.perf_counter() - start) / FLAGS.steps
  loader.close()
  batches = [sharding.host_to_global(b, mesh) for b in host]

  teacher_model, _, _, teacher_init = teacher.build(config)
  teacher_state, _, _ = state.create_sharded_state(teacher_init, jax.random.key(0), mesh)
  timers = {
      "teacher": _train_step_timer(teacher, config, mesh),
      "student_distilled": _train_step_timer(student, config, mesh, teacher=teacher_model,
                                             variables=teacher_state.variables()),
  }
  baseline = config.copy_and_resolve_references()
  for name in student.KD_TERMS:
    baseline.student[f"{name}_weight"] = 0.0
  timers["student_baseline"] = _train_step_timer(student, baseline, mesh)
  results = {"input_pipeline": pipeline_s}
  for name, timer in timers.items():
    results[name] = _time(timer, batches, FLAGS.steps)
  eval_step = jax.jit(functools.partial(steps.eval_step, model=teacher_model,
                                        options=teacher.step_options(config), uses_points=True))
  results["teacher_eval"] = _time(lambda b: eval_step(teacher_state.variables(), b), batches,
                                  FLAGS.steps)
  report = {name: {"ms_per_step": 1e3 * s, "images_per_s": batch_size / s}
            for name, s in results.items()}
  report["distillation_cost"] = results["student_distilled"] / results["student_baseline"]
  report["setup"] = {"devices": jax.device_count(), "platform": jax.devices()[0].platform,
                     "batch_size": batch_size, "image_size": config.image_size,
                     "num_points": config.num_points, "steps": FLAGS.steps,
                     "dataset": f"{config.dataset.name}/{config.dataset.config_name}",
                     "eval_records": {s: len(d.indices) for s, d in eval_data.items()}}
  print(json.dumps(report, indent=2))
  for name, row in report.items():
    if isinstance(row, dict) and "ms_per_step" in row:
      print(f"{name:<20} {row['ms_per_step']:9.1f} ms/step {row['images_per_s']:9.1f} images/s")
  print(f"distillation cost (student step / baseline step): {report['distillation_cost']:.2f}x")
  np.testing.assert_(all(np.isfinite(s) for s in results.values()))


if __name__ == "__main__":
  app.run(main)
