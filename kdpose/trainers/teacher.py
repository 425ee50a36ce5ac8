"""Stage 1: the multi-modal teacher (image + shape point cloud)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kdpose import augment, models, optimizers, state, steps
from kdpose.data import pipeline
from kdpose.trainers import head_warmup, loop


def step_options(config: ConfigDict) -> steps.StepOptions:
  cfg = config.teacher
  return steps.StepOptions(
      image_size=config.image_size, num_points=config.num_points, bin_size=config.bin_size,
      flip_test=config.flip_test, augment=augment.AugmentConfig.from_mapping(config.augment),
      weights=(("align", cfg.align_weight),), temperatures=(("align", cfg.align_temperature),),
      align_stop_gradient=cfg.get("align_stop_gradient", False))  # older runs: False


def build(config: ConfigDict):
  """The teacher model, its optimizer and schedule, and its state's init function."""
  cfg = config.teacher
  model = models.build_teacher(cfg.model, config.bin_size)
  tx, schedule = optimizers.make_optimizer(  # runs saved before skip_nonfinite: off.
      cfg.optimizer, cfg.num_steps, cfg.model, skip_nonfinite=cfg.get("skip_nonfinite", False))
  example = (jnp.zeros((1, config.image_size, config.image_size, 3)),
             jnp.zeros((1, config.num_points, 3)))
  init_fn = functools.partial(state.init_train_state, model=model, tx=tx, example_inputs=example)
  return model, tx, schedule, init_fn


def make_stage(config: ConfigDict, mesh: Mesh, train_data: pipeline.SplitData,
               eval_data: dict[str, pipeline.SplitData]) -> loop.Stage:
  model, tx, schedule, init_fn = build(config)
  options = step_options(config)
  train_step = loop.jit_train_step(functools.partial(
      steps.teacher_train_step, model=model, tx=tx, schedule=schedule, options=options),
      init_fn, mesh)
  eval_step = jax.jit(functools.partial(steps.eval_step, model=model, options=options,
                                        uses_points=True))
  warm_up = functools.partial(head_warmup.warm_up, model=model, stage="teacher", config=config,
                              data=train_data, step_options=options)
  return loop.Stage(name="teacher", config=config.teacher, init_fn=init_fn,
                    train_step=train_step, eval_step=eval_step, train_data=train_data,
                    eval_data=eval_data, warm_up=warm_up)
