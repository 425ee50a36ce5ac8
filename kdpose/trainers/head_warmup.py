"""Head warm-up: a stage's new layers trained on frozen encoder features before fine-tuning.

Fine-tuning a pretrained encoder under freshly initialised heads spends its first epochs
carrying the heads' random gradients into the encoder; on 2 CPU cores those epochs are most of
the budget. Linear probing, then fine-tuning (LP-FT, Kumar et al., ICLR 2022) first trains the
new layers on the frozen encoder's features, which costs one inference pass over the training
split (``frozen_features``, cached on disk and shared by both stages and every run on the same
encoder) and then almost nothing per step. Here every layer after the encoder learns (the
student's MLP, projector and heads; the teacher's image feature, PointNet, fusion, projector
and heads), on each record's exact crop and its mirror image (labels ``flip_viewpoint``, points
mirrored), with the stage's own loss: the teacher's pose + alignment, the student's pose loss
alone, so a distilled student and its baseline start from the same heads.

Runs once, on a fresh state (a resumed stage has its warmed-up heads in its checkpoint); the
result is a pure function of the config and the data. The encoder's weights and statistics are
untouched, and the optimizer state is the stage's fresh one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from kdpose import geometry, losses, optimizers, steps
from kdpose.data import pipeline, registry
from kdpose.state import TrainState
from kdpose.trainers import frozen_features
from kdpose.trainers import progress as progress_lib


def options(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """The extraction options (``frozen_features.cache_path``) of ``stage``'s encoder."""
  model = config[stage].model
  return ml_collections.ConfigDict(dict(encoder=model.image_encoder, weights=model.pretrained,
                                        image_size=config.image_size,
                                        grid=int(model.get("pool_grid", 1))))


def training_features(config: ml_collections.ConfigDict, stage: str, data: pipeline.SplitData,
                      num_points: int) -> dict[str, np.ndarray]:
  """The frozen features of ``data``'s records and of their mirror images, stacked: ``features
  [2n, C]``, ``viewpoint [2n, 3]``, ``symmetry [2n]`` (+ ``points [2n, num_points, 3]``)."""
  warmup = config[stage].head_warmup
  extraction = options(config, stage)
  builder = registry.prepare(config.dataset)
  # The filtered records are part of the cache's name: another filter is another file.
  digest = hashlib.sha1(np.asarray(data.indices, np.int64).tobytes()).hexdigest()[:10]
  path = frozen_features.cache_path(
      warmup.cache_dir, config.dataset, str(builder.info.version),
      f"{config.dataset.train_split}.{digest}", extraction, flip=True, num_points=num_points)
  # Built on first use: a cached split needs no encoder weights loaded or compiled.
  extractor = functools.cache(lambda: frozen_features.make_extractor(
      extraction.encoder, extraction.weights, extraction.image_size, extraction.grid))
  records = frozen_features.split_features(data, path, lambda *args: extractor()(*args),
                                           flip=True, num_points=num_points)
  stacked = {"features": np.concatenate([records["features"], records["flipped"]]),
             "viewpoint": np.concatenate([records["viewpoint"],
                                          geometry.flip_viewpoint(records["viewpoint"])]),
             "symmetry": np.concatenate([records["symmetry"]] * 2)}
  if num_points:
    mirrored = records["points"] * np.array([-1.0, 1.0, 1.0], np.float32)
    stacked["points"] = np.concatenate([records["points"], mirrored])
  return stacked


def _objective(stage: str, outputs, batch, options_: steps.StepOptions):
  if stage == "teacher":
    return steps.teacher_objective(outputs, batch["viewpoint"], batch["symmetry"], options_)
  pose, terms = losses.pose_loss(outputs["pose"], batch["viewpoint"], options_.bin_size,
                                 batch["symmetry"])
  return pose, dict(terms, pose=pose)


def _warmup_step(params, batch_stats, opt_state, batch, rng, *, stage: str, model: nn.Module,
                 tx: optax.GradientTransformation, options_: steps.StepOptions):
  """One update of the layers after the encoder on a batch of frozen features."""
  inputs = (None, batch["points"]) if stage == "teacher" else (None,)

  def loss_fn(params):
    outputs, updated = model.apply({"params": params, "batch_stats": batch_stats}, *inputs,
                                   train=True, trunk=batch["features"], mutable=["batch_stats"],
                                   rngs={"dropout": rng})
    loss, terms = _objective(stage, outputs, batch, options_)
    return loss, (terms, updated["batch_stats"])

  (loss, (terms, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), dict(batch_stats, **new_stats), opt_state, terms


def warm_up(train_state: TrainState, model: nn.Module, stage: str,
            config: ml_collections.ConfigDict, data: pipeline.SplitData,
            step_options: steps.StepOptions) -> TrainState:
  """``train_state`` (fresh, with its pretrained encoder) with warmed-up layers after the
  encoder: ``head_warmup.steps`` Adam steps (cosine decay from ``learning_rate``) on batches of
  ``head_warmup.batch_size`` frozen features, drawn as ``pipeline.train_positions``."""
  warmup, model_config = config[stage].head_warmup, config[stage].model
  if not model_config.get("pretrained", ""):
    raise ValueError(f"config.{stage}.head_warmup.steps={warmup.steps} needs a pretrained "
                     f"encoder (config.{stage}.model.pretrained): the warm-up's features come "
                     "from the encoder's weights before training.")
  start = time.perf_counter()
  # One cache for both stages: the student's copy of the points is simply not used.
  train = training_features(config, stage, data, step_options.num_points)
  if stage == "student":
    train.pop("points")
  extracted_s = time.perf_counter() - start
  params = train_state.params
  # Only the new layers learn: the whole encoder (pretrained and frozen stages) stays put.
  tx = optax.multi_transform(
      {"new": optax.adam(optax.cosine_decay_schedule(warmup.learning_rate, warmup.steps)),
       "pretrained": optax.set_to_zero(), "frozen": optax.set_to_zero()},
      optimizers.parameter_labels(params, model_config))
  step = jax.jit(functools.partial(_warmup_step, stage=stage, model=model, tx=tx,
                                   options_=step_options), donate_argnums=(0, 1, 2))
  params = jax.tree.map(jnp.copy, params)  # the step donates its inputs
  batch_stats = jax.tree.map(jnp.copy, train_state.batch_stats)
  opt_state, rng = tx.init(params), jax.random.key(config.seed + 2000)
  n, seed = len(train["features"]), config.seed + 3000
  progress = progress_lib.StageProgress(f"{stage} head warm-up", warmup.steps, 0, None)
  for index in range(warmup.steps):
    positions = pipeline.train_positions(index, warmup.batch_size, n, seed)
    batch = {key: value[positions] for key, value in train.items()}
    params, batch_stats, opt_state, terms = step(params, batch_stats, opt_state, batch,
                                                 jax.random.fold_in(rng, index))
    progress(index + 1)
  terms = {key: float(value) for key, value in jax.device_get(terms).items()}
  if not all(np.isfinite(list(terms.values()))):
    raise FloatingPointError(f"{stage} head warm-up: non-finite loss terms {terms}; lower "
                             f"config.{stage}.head_warmup.learning_rate.")
  logging.info("%s head warm-up: %d steps on %d frozen features (%.0f s to extract or load, "
               "%.0f s in all); last batch %s.", stage, warmup.steps, n, extracted_s,
               time.perf_counter() - start, terms)
  placed = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding),
                        (params, batch_stats), (train_state.params, train_state.batch_stats))
  return train_state.replace(params=placed[0], batch_stats=placed[1])

