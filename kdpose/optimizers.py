"""Optimizers and learning-rate schedules, built once from a config block."""

from __future__ import annotations

import optax
from ml_collections import ConfigDict


def learning_rate_schedule(config: ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up, then ``cosine`` decay to 0, or ``step`` decay (x``decay_factor`` at the
  fractions ``decay_at`` of training), or ``constant``."""
  base, warmup = config.learning_rate, min(config.warmup_steps, max(num_steps - 1, 0))
  if config.schedule == "cosine":
    decay = optax.cosine_decay_schedule(base, max(num_steps - warmup, 1))
  elif config.schedule == "step":
    boundaries = {max(int(f * num_steps) - warmup, 1): config.decay_factor for f in config.decay_at}
    decay = optax.piecewise_constant_schedule(base, boundaries)
  elif config.schedule == "constant":
    decay = optax.constant_schedule(base)
  else:
    raise ValueError(f"Unknown schedule {config.schedule!r}; known: cosine, step, constant.")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), decay], [warmup])


def make_optimizer(config: ConfigDict, num_steps: int) -> tuple[optax.GradientTransformation,
                                                                  optax.Schedule]:
  """The optax transformation (``adam`` with L2 weight decay as the anchors, or ``adamw``) and its
  schedule. Build it once per stage: a second object is different static metadata under jit."""
  schedule = learning_rate_schedule(config, num_steps)
  if config.name == "adam":
    # The anchors' Adam(weight_decay) adds an L2 term to the gradient before the moments.
    tx = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.adam(schedule))
  elif config.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
  else:
    raise ValueError(f"Unknown optimizer {config.name!r}; known: adam, adamw.")
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  return tx, schedule
