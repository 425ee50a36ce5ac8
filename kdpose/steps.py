"""Pure train and eval step functions of both stages, jitted once by the trainers.

Options are bound with ``functools.partial``; the step's rng is folded with the state's step
inside the step, so a resumed run draws the same randomness. Every array argument is a global
batch (sharded over the mesh's ``data`` axis); the losses see the whole batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from kdpose import augment, geometry, inference, losses, optimizers
from kdpose.models import heads
from kdpose.state import TrainState


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """Static options of a stage's steps (hashable).

  Attributes:
    image_size: side of the network input, pixels.
    num_points: points drawn per example for the teacher's shape encoder.
    bin_size: pose bin size, degrees.
    augment: training augmentation.
    weights: loss name -> weight; a weight of 0 removes its term (and its computation).
    temperatures: loss name -> softmax temperature.
    teacher_dropout: dropout rate on the teacher embedding in contrastive KD.
    symmetric: contrastive KD in both directions.
    pose_aware: weigh KD negatives by geodesic(pose_i, pose_j) / 180 (PoseContrast).
    ckd_projector: contrastive KD on the student's projected embedding (True) or directly on its
      pose feature (False: no projector between the contrastive and the pose objectives).
    flip_test: evaluation also predicts on mirrored crops and keeps, per sample, the one with
      the more confident azimuth bin.
    align_stop_gradient: the teacher's alignment term moves only the image side (the fused
      embedding is its fixed target), so it cannot pull the fused embedding towards what the
      image alone predicts.
  """

  image_size: int
  num_points: int
  bin_size: float
  augment: augment.AugmentConfig
  weights: tuple[tuple[str, float], ...]
  temperatures: tuple[tuple[str, float], ...] = ()
  teacher_dropout: float = 0.0
  symmetric: bool = False
  pose_aware: bool = False
  ckd_projector: bool = True
  flip_test: bool = False
  align_stop_gradient: bool = False

  def weight(self, name: str) -> float:
    return dict(self.weights).get(name, 0.0)

  def temperature(self, name: str) -> float:
    return dict(self.temperatures)[name]


def sample_points(rng: jax.Array, points: jax.Array, num_points: int) -> jax.Array:
  """``[B, num_points, 3]`` drawn without replacement from each example's ``[B, N, 3]``."""
  keys = jax.random.split(rng, points.shape[0])
  choose = lambda key, cloud: cloud[jax.random.permutation(key, cloud.shape[0])[:num_points]]
  return jax.vmap(choose)(keys, points)


def _augmented_inputs(rng: jax.Array, batch: dict[str, jax.Array], options: StepOptions):
  """Training images ``[B, S, S, 3]``, their viewpoints ``[B, 3]`` (degrees), points."""
  aug_rng, points_rng = jax.random.split(rng)
  images, viewpoints, flipped = augment.augment_batch(
      aug_rng, batch["image"], batch["box"], batch["viewpoint"], options.image_size,
      options.augment)
  points = sample_points(points_rng, batch["points"], options.num_points)
  return images, viewpoints, augment.mirror_points(points, flipped)


def _symmetry(batch: dict[str, jax.Array]) -> jax.Array:
  """Each sample's symmetry about its vertical axis ``[B]`` (int32, ``geometry.SYMMETRY_NAMES``).

  Augmentation keeps it: a mirrored or turned crop shows an object of the same symmetry.
  """
  if "symmetry" not in batch:
    raise KeyError(f"kdpose/steps.py: the batch has no 'symmetry' (int32 [B] codes of "
                   f"geometry.SYMMETRY_NAMES, which pipeline.BatchLoader adds); a batch built by "
                   f"hand must carry it (zeros: no symmetry). Its keys: {sorted(batch)}.")
  return batch["symmetry"]


def _pose_metrics(pose, viewpoint: jax.Array, symmetry: jax.Array, bin_size: float
                  ) -> dict[str, jax.Array]:
  """Training Acc@30 (%) and median error (degrees, up to ``symmetry [B]``) of the decoded
  predictions."""
  predicted, _ = heads.decode_pose(pose, bin_size)
  errors = geometry.symmetric_rotation_error(predicted, viewpoint, symmetry)
  return {"acc30": jnp.mean(errors <= 30.0) * 100.0, "med_err": jnp.median(errors)}


def _apply_gradients(state: TrainState, grads, batch_stats, tx: optax.GradientTransformation
                     ) -> tuple[TrainState, dict[str, jax.Array]]:
  """The state after the update, and with ``skip_nonfinite`` the metric ``skipped_updates``
  (1.0 where a non-finite gradient's update was skipped: then the parameters and the BatchNorm
  statistics stay as they were; the step still counts, so the next batch is the next one)."""
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  skipped, metrics = optimizers.update_skipped(opt_state), {}
  if skipped is not None:
    batch_stats = jax.tree.map(lambda new, old: jnp.where(skipped, old, new), batch_stats,
                               state.batch_stats)
    metrics["skipped_updates"] = skipped.astype(jnp.float32)
  return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state), metrics


def teacher_objective(outputs, viewpoints: jax.Array, symmetry: jax.Array, options: StepOptions
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Stage 1's loss on the teacher's outputs: pose + align_weight * InfoNCE(image projector
  embedding, fused embedding), and its terms. The alignment trains both embeddings unless
  ``options.align_stop_gradient``."""
  pose, terms = losses.pose_loss(outputs["pose"], viewpoints, options.bin_size, symmetry)
  terms["pose"] = pose
  loss = pose
  if options.weight("align"):
    fused = outputs["embedding"]
    if options.align_stop_gradient:
      fused = jax.lax.stop_gradient(fused)
    terms["align"] = losses.info_nce(outputs["image_embedding"], fused,
                                     options.temperature("align"))
    loss = loss + options.weight("align") * terms["align"]
  return loss, terms


def teacher_train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
                       model: nn.Module, tx: optax.GradientTransformation,
                       schedule: optax.Schedule, options: StepOptions
                       ) -> tuple[TrainState, dict[str, jax.Array]]:
  """Stage 1: pose loss + align_weight * InfoNCE(image projector embedding, fused embedding).

  By default the alignment term pulls both sides together (making the fused embedding
  predictable from the image alone is what the student must later do); with
  ``align_stop_gradient`` only the image side moves.
  """
  rng = jax.random.fold_in(rng, state.step)
  inputs_rng, dropout_rng = jax.random.split(rng)
  images, viewpoints, points = _augmented_inputs(inputs_rng, batch, options)
  symmetry = _symmetry(batch)

  def loss_fn(params):
    outputs, updated = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, images, points, train=True,
        mutable=["batch_stats"], rngs={"dropout": dropout_rng})
    loss, terms = teacher_objective(outputs, viewpoints, symmetry, options)
    return loss, (terms, updated["batch_stats"], outputs["pose"])

  (loss, (terms, batch_stats, pose)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  metrics = {"loss": loss, **terms, **_pose_metrics(pose, viewpoints, symmetry, options.bin_size),
             "grad_norm": optax.global_norm(grads), "learning_rate": schedule(state.step)}
  state, update_metrics = _apply_gradients(state, grads, batch_stats, tx)
  return state, {**metrics, **update_metrics}


def _dropout(rng: jax.Array, x: jax.Array, rate: float) -> jax.Array:
  if not rate:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def _distillation_terms(student_out, teacher_out, viewpoints, rng, options: StepOptions):
  """The weighted KD terms of stage 2 (zero-weight terms are not computed)."""
  terms = {}
  if options.weight("ckd"):
    teacher_emb = _dropout(rng, teacher_out["embedding"], options.teacher_dropout)
    pose_weights = losses.pose_aware_weights(viewpoints) if options.pose_aware else None
    student_emb = student_out["embedding" if options.ckd_projector else "feature"]
    terms["ckd"] = losses.contrastive_kd(
        student_emb, teacher_emb, options.temperature("ckd"),
        pose_weights=pose_weights, symmetric=options.symmetric)
  if options.weight("logit"):
    terms["logit"] = losses.logit_kd(student_out["pose"], teacher_out["pose"],
                                     options.temperature("logit"))
  if options.weight("feature"):
    terms["feature"] = losses.feature_kd(student_out["feature"], teacher_out["embedding"],
                                         options.temperature("feature"))
  return terms


def _retrieval_accuracy(student_emb: jax.Array, teacher_emb: jax.Array) -> jax.Array:
  """% of samples whose nearest teacher embedding (cosine) is their own: a KD diagnostic."""
  similarity = student_emb @ teacher_emb.T / (
      jnp.linalg.norm(student_emb, axis=-1, keepdims=True)
      * jnp.linalg.norm(teacher_emb, axis=-1)[None, :] + 1e-9)
  return jnp.mean(jnp.argmax(similarity, -1) == jnp.arange(similarity.shape[0])) * 100.0


def student_train_step(state: TrainState, teacher_variables: dict[str, Any],
                       batch: dict[str, jax.Array], rng: jax.Array, *, model: nn.Module,
                       teacher: nn.Module | None, tx: optax.GradientTransformation,
                       schedule: optax.Schedule, options: StepOptions
                       ) -> tuple[TrainState, dict[str, jax.Array]]:
  """Stage 2: pose_weight * pose + the weighted KD terms against the frozen teacher.

  The teacher runs in inference mode before and outside autodiff; with every KD weight 0
  (the baseline student) it is not run at all and ``teacher`` may be None.
  """
  rng = jax.random.fold_in(rng, state.step)
  inputs_rng, dropout_rng, kd_rng = jax.random.split(rng, 3)
  images, viewpoints, points = _augmented_inputs(inputs_rng, batch, options)
  symmetry = _symmetry(batch)
  distill = any(options.weight(n) for n in ("ckd", "logit", "feature"))
  teacher_out = None
  if distill:
    teacher_out = jax.lax.stop_gradient(teacher.apply(teacher_variables, images, points,
                                                      train=False))

  def loss_fn(params):
    outputs, updated = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, images, train=True,
        mutable=["batch_stats"], rngs={"dropout": dropout_rng})
    pose, terms = losses.pose_loss(outputs["pose"], viewpoints, options.bin_size, symmetry)
    terms["pose"] = pose
    loss = options.weight("pose") * pose
    if distill:
      kd_terms = _distillation_terms(outputs, teacher_out, viewpoints, kd_rng, options)
      loss = loss + sum(options.weight(name) * value for name, value in kd_terms.items())
      terms.update({f"kd/{name}": value for name, value in kd_terms.items()})
    return loss, (terms, updated["batch_stats"], outputs)

  (loss, (terms, batch_stats, outputs)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  metrics = {"loss": loss, **terms,
             **_pose_metrics(outputs["pose"], viewpoints, symmetry, options.bin_size),
             "grad_norm": optax.global_norm(grads), "learning_rate": schedule(state.step)}
  if distill:
    metrics["kd/retrieval_acc"] = _retrieval_accuracy(outputs["embedding"],
                                                      teacher_out["embedding"])
  state, update_metrics = _apply_gradients(state, grads, batch_stats, tx)
  return state, {**metrics, **update_metrics}


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, model: nn.Module,
              options: StepOptions, uses_points: bool,
              swap_shapes: bool = False) -> dict[str, jax.Array]:
  """Predictions on exact box crops: viewpoint ``[B, 3]`` and confidence ``[B, 3]``, error
  ``[B]`` against the label up to the object's symmetry (``geometry.symmetric_rotation_error``
  with the batch's ``symmetry [B]``; all degrees but confidence). The teacher also gets the first
  ``num_points`` stored points (a uniform sample: stored points are i.i.d. surface samples).
  With ``swap_shapes`` (a diagnostic of the teacher), each sample gets the points of the sample
  half a batch away instead of its own."""
  symmetry = _symmetry(batch)
  points = batch["points"][:, :options.num_points] if uses_points else None
  if swap_shapes:
    points = jnp.roll(points, points.shape[0] // 2, axis=0)
  viewpoint, confidence = inference.predict_boxes(
      model, variables, batch["image"], batch["box"], image_size=options.image_size,
      bin_size=options.bin_size, flip_test=options.flip_test, points=points)
  return {"viewpoint": viewpoint, "confidence": confidence,
          "error": geometry.symmetric_rotation_error(viewpoint, batch["viewpoint"], symmetry)}
