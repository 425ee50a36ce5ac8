"""Stage 2: the image-only student, distilled from the frozen teacher of stage 1."""

from __future__ import annotations

import functools
import os
from typing import Any

import flax.linen as nn
import jax
from etils import epath
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kdpose import checkpoint, run_config, sharding, stages, state, steps
from kdpose.data import pipeline
from kdpose.trainers import head_warmup, loop

# What a frozen teacher must have been trained on to take the student's inputs: crops of this
# side, this many points, these bins, from this dataset. (Image normalisation cannot differ:
# each encoder normalises its [0, 1] crops itself, with the constants of its own weights.)
TEACHER_INPUT_KEYS = ("image_size", "num_points", "bin_size", "dataset.name",
                      "dataset.config_name")


def _lookup(config: ConfigDict, dotted: str):
  for key in dotted.split("."):
    config = config.get(key) if config is not None else None
  return config


def teacher_input_differences(teacher_config: ConfigDict, config: ConfigDict) -> list[str]:
  """``"key: teacher X, student Y"`` for each of ``TEACHER_INPUT_KEYS`` that differs."""
  return [f"{key}: teacher {_lookup(teacher_config, key)!r}, student {_lookup(config, key)!r}"
          for key in TEACHER_INPUT_KEYS if _lookup(teacher_config, key) != _lookup(config, key)]


def load_frozen_teacher(config: ConfigDict, workdir: str, mesh: Mesh
                        ) -> tuple[nn.Module, dict[str, Any]]:
  """The teacher model and its variables (params, batch_stats), replicated over the mesh.

  Taken from the latest stage-1 checkpoint of ``config.teacher_workdir`` (built from that
  run's own config.json, so its sizes may differ from this config's) or of ``workdir``.
  """
  teacher_root = config.teacher_workdir or workdir
  teacher_dir = os.path.join(teacher_root, "teacher", "checkpoints")
  if not epath.Path(teacher_dir).is_dir():
    raise FileNotFoundError(
        f"Stage 2 needs a trained teacher: no checkpoints in {teacher_dir}. Run stage 1 first "
        "(config.stage='teacher' or 'all') or point config.teacher_workdir at a run that has one.")
  teacher_config = (run_config.load_run_config(teacher_root) if config.teacher_workdir
                    else config)
  differences = teacher_input_differences(teacher_config, config)
  if differences:
    raise ValueError(
        f"The teacher of {teacher_root} was trained on other inputs than this student feeds it "
        f"({'; '.join(differences)}). Train the student with the teacher's values (e.g. "
        f"--config.image_size=...) or train a teacher for these inputs.")
  model, _, _, init_fn = stages.build_teacher(teacher_config)
  checkpoints = checkpoint.StageCheckpoints(teacher_dir, read_only=True)
  abstract, _ = state.abstract_state(init_fn, mesh)
  restored, _ = checkpoints.restore(abstract)
  checkpoints.close()
  if int(restored.step) < teacher_config.teacher.num_steps:
    raise ValueError(f"The teacher in {teacher_dir} is at step {int(restored.step)} of "
                     f"{teacher_config.teacher.num_steps}: finish stage 1 first.")
  return model, jax.device_put(restored.variables(), sharding.replicated(mesh))


def make_stage(config: ConfigDict, workdir: str, mesh: Mesh, train_data: pipeline.SplitData,
               eval_data: dict[str, pipeline.SplitData]) -> loop.Stage:
  teacher_model, teacher_variables = None, {}
  if stages.distills(config):
    teacher_model, teacher_variables = load_frozen_teacher(config, workdir, mesh)
  jitted, model, init_fn, options = stages.student_train_step(config, mesh, teacher_model)
  eval_step = jax.jit(functools.partial(steps.eval_step, model=model, options=options,
                                        uses_points=False))
  return loop.Stage(
      name="student", config=config.student, init_fn=init_fn,
      train_step=lambda st, batch, rng: jitted(st, teacher_variables, batch, rng),
      eval_step=eval_step, train_data=train_data, eval_data=eval_data,
      warm_up=functools.partial(head_warmup.warm_up, model=model, stage="student",
                                config=config, data=train_data, step_options=options))
