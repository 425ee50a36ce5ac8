"""Stage runners: ``run(config, workdir)`` trains the teacher, then the student, as configured."""

from __future__ import annotations

import json
import logging
import os

import jax
from ml_collections import ConfigDict

from kdpose import checkpoint, config_checks, run_config, sharding
from kdpose.trainers import inputs, loop, student, teacher


def run(config: ConfigDict, workdir: str) -> dict[str, dict[str, dict]]:
  """Runs the configured stages in ``workdir``; returns stage -> split -> viewpoint report.

  The config's values and the workdir are checked first (``config_checks``), then the config
  against the one of a run being resumed (``run_config.record_config``)."""
  mesh = sharding.make_mesh()
  config_checks.validate(config, mesh)
  config_checks.check_workdir(workdir)
  resuming = any(checkpoint.has_steps(os.path.join(workdir, name, "checkpoints"))
                 for name in config_checks.STAGES)
  run_config.record_config(config, workdir, resuming=resuming, write=jax.process_index() == 0)
  train_data, eval_data = inputs.load_data(config)
  logging.info("Training on %d records (%d categories); evaluating on %s.",
               len(train_data.indices), len(set(train_data.categories)),
               {s: len(d.indices) for s, d in eval_data.items()})
  reports, names = {}, config_checks.stages(config)
  for index, name in enumerate(names):
    if name == "teacher":
      stage = teacher.make_stage(config, mesh, train_data, eval_data)
    else:
      stage = student.make_stage(config, workdir, mesh, train_data, eval_data)
    stage.later_steps = sum(config[later].num_steps for later in names[index + 1:])
    reports[name] = loop.run_stage(stage, config, workdir, mesh)
  logging.info("Reports: %s", json.dumps({n: {s: r["mean"] for s, r in v.items()}
                                          for n, v in reports.items()}))
  return reports
