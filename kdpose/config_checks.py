"""A run's config values and its workdir, checked before anything is built or compiled.

Each error names the config key and the value; ``validate`` reports every bad value at once.
(The number of points is checked against the dataset where it is loaded: ``trainers.inputs``.)
"""

from __future__ import annotations

import os

from etils import epath
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kdpose import sharding

STAGES = ("teacher", "student")


def stages(config: ConfigDict) -> list[str]:
  """The stages ``config.stage`` runs, in order."""
  if config.stage == "all":
    return list(STAGES)
  if config.stage not in STAGES:
    raise ValueError(f"config.stage={config.stage!r}; expected one of {STAGES} or 'all'.")
  return [config.stage]


def _stage_problems(cfg: ConfigDict, name: str, mesh: Mesh) -> list[str]:
  problems = [f"config.{name}.{key}={cfg[key]!r} must be > 0"
              for key in ("num_steps", "log_every", "checkpoint_every") if cfg[key] <= 0]
  problems += [f"config.{name}.{key}={cfg[key]!r} must be > 0"
               for key in sorted(cfg) if key.endswith("_temperature") and cfg[key] <= 0]
  problems += [f"config.{name}.optimizer.decay_at has {fraction!r}: fractions of training must "
               "lie in (0, 1)" for fraction in cfg.optimizer.decay_at if not 0 < fraction < 1]
  if "teacher_dropout" in cfg and not 0 <= cfg.teacher_dropout < 1:
    problems.append(f"config.{name}.teacher_dropout={cfg.teacher_dropout!r} must lie in [0, 1)")
  return problems + _batch_problems(cfg.batch_size, f"{name}.batch_size", mesh)


def _batch_problems(batch_size: int, key: str, mesh: Mesh) -> list[str]:
  try:
    sharding.host_batch_size(batch_size, mesh)
  except ValueError as error:
    return [f"config.{key}: {error}"]
  return []


def validate(config: ConfigDict, mesh: Mesh) -> None:
  """Raises a ValueError listing every bad value of the stages ``config`` runs: intervals and
  step counts <= 0, temperatures <= 0, ``teacher_dropout`` outside [0, 1), ``decay_at``
  fractions outside (0, 1), batch sizes the devices of ``mesh`` do not divide, input loader
  thread or worker counts < 0."""
  problems = [problem for name in stages(config)
              for problem in _stage_problems(config[name], name, mesh)]
  problems += _batch_problems(config.eval_batch_size, "eval_batch_size", mesh)
  problems += [f"config.dataset.{key}={config.dataset[key]!r} must be >= 0"
               for key in ("loader_threads", "loader_workers") if config.dataset[key] < 0]
  if problems:
    raise ValueError("Bad config values: " + "; ".join(problems) + ".")


def check_workdir(workdir: str) -> None:
  """Creates ``workdir`` if needed and writes and deletes a file there, raising an OSError
  naming it (before anything trains) when either fails. A bucket (``gs://...``) works as a
  local path does: every file of a run goes through etils.epath (``kdpose.files``, orbax)."""
  probe = epath.Path(workdir) / f".kdpose_write_test_{os.getpid()}"
  try:
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text("")
    probe.unlink()
  except Exception as error:  # OSError on a disk; gfile raises tf.errors.OpError types
    raise OSError(f"Workdir {workdir} is not writable ({error}); choose another --workdir."
                  ) from error
