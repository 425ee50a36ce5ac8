"""What each stage trains, from its config: the model, optimizer and schedule, the state's init
function, the step options and the jitted train step with the trainer's shardings.

Imports only jax, flax, optax, numpy and ml_collections (no TensorFlow): the trainers
(``kdpose/trainers``), ``tools/benchmark.py`` and an accelerator image without TF share it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kdpose import augment, models, optimizers, sharding, state, steps

KD_TERMS = ("ckd", "logit", "feature")


def _common_options(config: ConfigDict) -> dict:
  return dict(image_size=config.image_size, num_points=config.num_points,
              bin_size=config.bin_size, flip_test=config.flip_test,
              augment=augment.AugmentConfig.from_mapping(config.augment))


def teacher_step_options(config: ConfigDict) -> steps.StepOptions:
  cfg = config.teacher
  return steps.StepOptions(
      **_common_options(config), weights=(("align", cfg.align_weight),),
      temperatures=(("align", cfg.align_temperature),),
      align_stop_gradient=cfg.get("align_stop_gradient", False))  # older runs: False


def student_step_options(config: ConfigDict) -> steps.StepOptions:
  cfg = config.student
  return steps.StepOptions(
      **_common_options(config),
      weights=(("pose", cfg.pose_weight),) + tuple((n, cfg[f"{n}_weight"]) for n in KD_TERMS),
      temperatures=tuple((n, cfg[f"{n}_temperature"]) for n in KD_TERMS),
      teacher_dropout=cfg.teacher_dropout, symmetric=cfg.symmetric, pose_aware=cfg.pose_aware,
      ckd_projector=cfg.get("ckd_projector", True))  # runs saved before the option: True.


def distills(config: ConfigDict) -> bool:
  """False for the baseline student (every KD weight 0): no teacher is needed."""
  return any(config.student[f"{name}_weight"] for name in KD_TERMS)


def _build(config: ConfigDict, name: str, model, example: tuple):
  cfg = config[name]
  tx, schedule = optimizers.make_optimizer(  # runs saved before skip_nonfinite: off.
      cfg.optimizer, cfg.num_steps, cfg.model, skip_nonfinite=cfg.get("skip_nonfinite", False))
  init_fn = functools.partial(state.init_train_state, model=model, tx=tx, example_inputs=example)
  return model, tx, schedule, init_fn


def build_teacher(config: ConfigDict):
  """The teacher model, its optimizer and schedule, and its state's init function."""
  return _build(config, "teacher", models.build_teacher(config.teacher.model, config.bin_size),
                (jnp.zeros((1, config.image_size, config.image_size, 3)),
                 jnp.zeros((1, config.num_points, 3))))


def build_student(config: ConfigDict):
  """The student model, its optimizer and schedule, and its state's init function."""
  return _build(config, "student", models.build_student(config.student.model, config.bin_size),
                (jnp.zeros((1, config.image_size, config.image_size, 3)),))


# Stage name -> its builder and its step options.
BUILDERS = {"teacher": build_teacher, "student": build_student}
STEP_OPTIONS = {"teacher": teacher_step_options, "student": student_step_options}


def jit_train_step(step_fn: Callable, init_fn: Callable, mesh: Mesh, num_frozen: int = 0):
  """jit with explicit shardings: the state replicated and donated, ``num_frozen`` replicated
  non-donated arguments (a frozen teacher), the batch sharded along ``data``, a replicated rng."""
  replicated = sharding.replicated(mesh)
  _, state_sharding = state.abstract_state(init_fn, mesh)
  return jax.jit(step_fn,
                 in_shardings=(state_sharding, *(replicated,) * num_frozen,
                               sharding.batch_sharding(mesh), replicated),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))


def teacher_train_step(config: ConfigDict, mesh: Mesh):
  """(jitted ``step(state, batch, rng) -> (state, metrics)``, model, init_fn, options)."""
  model, tx, schedule, init_fn = build_teacher(config)
  options = teacher_step_options(config)
  jitted = jit_train_step(functools.partial(
      steps.teacher_train_step, model=model, tx=tx, schedule=schedule, options=options),
      init_fn, mesh)
  return jitted, model, init_fn, options


def student_train_step(config: ConfigDict, mesh: Mesh, teacher=None):
  """(jitted ``step(state, teacher_variables, batch, rng) -> (state, metrics)``, model,
  init_fn, options); ``teacher`` is the frozen teacher's module (None for the baseline)."""
  model, tx, schedule, init_fn = build_student(config)
  options = student_step_options(config)
  jitted = jit_train_step(functools.partial(
      steps.student_train_step, model=model, teacher=teacher, tx=tx, schedule=schedule,
      options=options), init_fn, mesh, num_frozen=1)
  return jitted, model, init_fn, options
