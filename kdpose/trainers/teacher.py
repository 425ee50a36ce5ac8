"""Stage 1: the multi-modal teacher (image + shape point cloud)."""

from __future__ import annotations

import functools

import jax
from jax.sharding import Mesh
from ml_collections import ConfigDict

from kdpose import stages, steps
from kdpose.data import pipeline
from kdpose.trainers import head_warmup, loop


def make_stage(config: ConfigDict, mesh: Mesh, train_data: pipeline.SplitData,
               eval_data: dict[str, pipeline.SplitData]) -> loop.Stage:
  train_step, model, init_fn, options = stages.teacher_train_step(config, mesh)
  eval_step = jax.jit(functools.partial(steps.eval_step, model=model, options=options,
                                        uses_points=True))
  warm_up = functools.partial(head_warmup.warm_up, model=model, stage="teacher", config=config,
                              data=train_data, step_options=options)
  return loop.Stage(name="teacher", config=config.teacher, init_fn=init_fn,
                    train_step=train_step, eval_step=eval_step, train_data=train_data,
                    eval_data=eval_data, warm_up=warm_up)
