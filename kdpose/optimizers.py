"""Optimizers and learning-rate schedules, built once from a config block."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import optax
from ml_collections import ConfigDict

from kdpose.models import encoder_parts

ENCODER = "image_encoder"  # the encoder's top-level name in the teacher's and student's params.
# skip_nonfinite: non-finite updates in a row that are skipped; optax applies the ones after.
MAX_CONSECUTIVE_SKIPS = 10


def learning_rate_schedule(config: ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over ``warmup_steps``, then ``cosine`` decay to 0 at ``num_steps``, or
  ``step`` decay (x``decay_factor`` at the fractions ``decay_at`` of training), or ``constant``."""
  base, warmup = config.learning_rate, min(config.warmup_steps, max(num_steps - 1, 0))
  if config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, base, warmup,
                                              warmup + max(num_steps - warmup, 1))
  if config.schedule == "step":
    boundaries = {max(int(f * num_steps) - warmup, 1): config.decay_factor for f in config.decay_at}
    decay = optax.piecewise_constant_schedule(base, boundaries)
  elif config.schedule == "constant":
    decay = optax.constant_schedule(base)
  else:
    raise ValueError(f"Unknown schedule {config.schedule!r}; known: cosine, step, constant.")
  if warmup == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), decay], [warmup])


def parameter_labels(params: Any, model_config: Mapping[str, Any]) -> Any:
  """``frozen`` (the encoder's frozen stages), ``pretrained`` (the rest of a pretrained
  encoder) or ``new``, for every leaf of ``params``."""
  frozen_stages = int(model_config.get("frozen_stages", 0))
  is_pretrained = bool(model_config.get("pretrained", ""))

  def label(path, _) -> str:
    names = [getattr(key, "key", key) for key in path]
    if names[0] != ENCODER:
      return "new"
    if encoder_parts.is_frozen(names[1], frozen_stages):
      return "frozen"
    return "pretrained" if is_pretrained else "new"

  return jax.tree_util.tree_map_with_path(label, params)


def _fine_tuning(tx: optax.GradientTransformation, config: ConfigDict,
                 model_config: Mapping[str, Any] | None) -> optax.GradientTransformation:
  """``tx`` for new parameters, ``tx`` scaled by ``pretrained_lr_multiplier`` for pretrained
  ones, nothing (not even weight decay) for frozen ones; ``tx`` alone when all are new."""
  multiplier = config.get("pretrained_lr_multiplier", 1.0)
  model_config = model_config or {}
  if not model_config.get("frozen_stages", 0) and (
      multiplier == 1.0 or not model_config.get("pretrained", "")):
    return tx  # the same optimizer state as before fine-tuning controls existed
  return optax.multi_transform(
      {"new": tx, "pretrained": optax.chain(tx, optax.scale(multiplier)),
       "frozen": optax.set_to_zero()},
      lambda params: parameter_labels(params, model_config))


def make_optimizer(config: ConfigDict, num_steps: int,
                   model_config: Mapping[str, Any] | None = None, *, skip_nonfinite: bool = False
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optax transformation (``adam`` with L2 weight decay as the anchors, or ``adamw``) and its
  schedule. Build it once per stage: a second object is different static metadata under jit.

  ``model_config`` (the stage's model) sets the fine-tuning of a pretrained encoder: its frozen
  stages stay still and its other parameters learn at ``pretrained_lr_multiplier`` times the
  learning rate (clipping, if any, still sees every gradient).

  ``skip_nonfinite`` (the stage config's) wraps it all in ``optax.apply_if_finite``: an update
  with a non-finite gradient is skipped (see ``update_skipped``). Without it the optimizer
  state is what it always was, so older checkpoints still restore."""
  schedule = learning_rate_schedule(config, num_steps)
  if config.name == "adam":
    # The anchors' Adam(weight_decay) adds an L2 term to the gradient before the moments.
    tx = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.adam(schedule))
  elif config.name == "adamw":
    tx = optax.adamw(schedule, weight_decay=config.weight_decay)
  else:
    raise ValueError(f"Unknown optimizer {config.name!r}; known: adam, adamw.")
  tx = _fine_tuning(tx, config, model_config)
  if config.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), tx)
  if skip_nonfinite:
    tx = optax.apply_if_finite(tx, MAX_CONSECUTIVE_SKIPS)
  return tx, schedule


def update_skipped(opt_state: Any) -> jax.Array | None:
  """Whether the update that produced ``opt_state`` was skipped for a non-finite gradient (bool
  scalar), or None for an optimizer without ``skip_nonfinite``. After ``MAX_CONSECUTIVE_SKIPS``
  skips in a row, optax applies the non-finite updates (and training stops on the loss)."""
  if not isinstance(opt_state, optax.ApplyIfFiniteState):
    return None
  return ~opt_state.last_finite & (opt_state.notfinite_count <= MAX_CONSECUTIVE_SKIPS)
