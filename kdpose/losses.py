"""Losses of both stages, as plain array code on **global** batches.

No axis names and no collectives: under ``jit`` with batch-sharded inputs, ``query @ keys.T``
spans the whole global batch and XLA inserts the all-gather, so the negatives of contrastive KD
are every other sample on every device and host. Every loss is a float32 scalar, mean over the
batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from kdpose import geometry

# The pose pytree of kdpose.models.heads (kept as a type here: losses do not import models).
Pose = dict[str, tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]]

_OFFSET_SCALE = 5.0  # the anchors scale the offset error by 5 before the Huber loss.


def _angle_terms(logits: jnp.ndarray, raw: jnp.ndarray, bins: jnp.ndarray,
                 targets: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Cross-entropy ``[batch]`` of ``logits [batch, bins]`` at ``bins [batch]`` (int), and the
  Huber ``[batch]`` of that bin's predicted offset (``tanh(raw) / 2``) against ``targets
  [batch]`` (fraction of a bin)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits, jnp.float32), bins)
  raw_at_bin = jnp.take_along_axis(jnp.asarray(raw, jnp.float32), bins[:, None], -1)[:, 0]
  # Smooth-L1 with beta 1 (Huber with delta 1): x^2 / 2 for |x| < 1, else |x| - 1/2.
  return ce, optax.huber_loss(_OFFSET_SCALE * (jnp.tanh(raw_at_bin) / 2 - targets), delta=1.0)


def _symmetric_azimuth_terms(logits: jnp.ndarray, raw: jnp.ndarray, viewpoint: jnp.ndarray,
                             symmetry: jnp.ndarray, terms: tuple[jnp.ndarray, jnp.ndarray],
                             bin_size: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """The azimuth ``terms`` (cross-entropy, Huber; each ``[batch]``) up to the symmetry: two-fold
  samples keep the label, of azimuth and azimuth + 180, whose summed terms are smaller;
  continuous ones get 0 (every azimuth is right, so no gradient reaches the azimuth head)."""
  if symmetry.shape != viewpoint.shape[:1]:
    raise ValueError(f"kdpose/losses.py: symmetry must be [batch] = {viewpoint.shape[:1]}, got "
                     f"{symmetry.shape}.")
  bins, targets = geometry.encode_viewpoint(viewpoint.at[:, 0].add(180.0), bin_size)
  turned = _angle_terms(logits, raw, bins[:, 0], targets[:, 0])
  use_turned = (symmetry == geometry.SYMMETRY_TWO_FOLD) & (sum(turned) < sum(terms))
  keep = symmetry != geometry.SYMMETRY_CONTINUOUS
  return tuple(jnp.where(keep, jnp.where(use_turned, t, own), 0.0)
               for own, t in zip(terms, turned, strict=True))


def pose_loss(pose: Pose, viewpoint: jnp.ndarray, bin_size: float = geometry.DEFAULT_BIN_SIZE,
              symmetry: jnp.ndarray | None = None
              ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
  """Bin cross-entropy + Huber on the ground-truth bin's offset, summed over the 3 angles.

  Args:
    pose: pose pytree of the heads (``kdpose.models.heads``), logits ``[batch, bins]`` and raw
      offsets ``[batch, bins]`` per angle.
    viewpoint: ground truth ``[batch, 3]`` in degrees.
    bin_size: bin size in degrees.
    symmetry: optional ``[batch]`` int codes (``geometry.SYMMETRY_NAMES``) of each object's
      symmetry about its vertical axis. Two-fold samples take the smaller azimuth terms of the
      labels azimuth and azimuth + 180; continuous samples have no azimuth terms (they still
      count in the batch mean, so the loss scale does not depend on their share). None: every
      sample asymmetric.

  Returns:
    (loss, {"pose_cls": cross-entropy part, "pose_reg": regression part}), scalars, means over
    the batch.
  """
  viewpoint = jnp.asarray(viewpoint, jnp.float32)
  bins, targets = geometry.encode_viewpoint(viewpoint, bin_size)
  terms = [_angle_terms(logits, raw, bins[:, k], targets[:, k])
           for k, (logits, raw) in enumerate(zip(pose["logits"], pose["offsets"], strict=True))]
  if symmetry is not None:
    terms[0] = _symmetric_azimuth_terms(pose["logits"][0], pose["offsets"][0], viewpoint,
                                        jnp.asarray(symmetry), terms[0], bin_size)
  cls = jnp.mean(sum(ce for ce, _ in terms))
  reg = jnp.mean(sum(huber for _, huber in terms))
  return cls + reg, {"pose_cls": cls, "pose_reg": reg}


def _l2_normalize(x: jnp.ndarray) -> jnp.ndarray:
  x = jnp.asarray(x, jnp.float32)
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x**2, axis=-1, keepdims=True), 1e-12))


def _one_way_info_nce(logits: jnp.ndarray, log_weights: jnp.ndarray | None) -> jnp.ndarray:
  """Per-row InfoNCE ``[batch]`` of ``logits [batch, batch]`` whose positives are diagonal."""
  # Relative to the positive logit, so the positive term is exactly exp(0) = 1 and every row's
  # loss is >= 0; the diagonal log-weight is 0, so the positive is never reweighted.
  relative = logits - jnp.diagonal(logits)[:, None]
  return jax.nn.logsumexp(relative if log_weights is None else relative + log_weights, axis=-1)


def info_nce(query: jnp.ndarray, keys: jnp.ndarray, temperature: float, *,
             negative_weights: jnp.ndarray | None = None, symmetric: bool = False
             ) -> jnp.ndarray:
  """InfoNCE over the global batch; the positive of row i is key i, the negatives every other.

  ``loss_i = -s_ii / tau + log(exp(s_ii / tau) + sum_{j != i} w_ij exp(s_ij / tau))`` with
  ``s`` the cosine similarity. Computed as a log-sum-exp of ``s / tau + log w`` (weight-0
  negatives drop out as ``-inf``), so it stays finite at ``tau = 0.01``.

  Args:
    query: ``[batch, D]``.
    keys: ``[batch, D]``.
    temperature: tau > 0.
    negative_weights: optional ``[batch, batch]`` >= 0 weights of the negatives, row = query;
      the diagonal is ignored.
    symmetric: also take keys as queries (with the transposed weights) and average both ways.

  Returns:
    Scalar, mean over the batch.
  """
  if query.shape != keys.shape or query.ndim != 2:
    raise ValueError(f"kdpose/losses.py: info_nce needs query and keys [batch, D] of one shape, "
                     f"got {query.shape} and {keys.shape}.")
  logits = _l2_normalize(query) @ _l2_normalize(keys).T / temperature
  log_weights = None
  if negative_weights is not None:
    weights = jnp.asarray(negative_weights, jnp.float32)
    if weights.shape != logits.shape:
      raise ValueError(f"kdpose/losses.py: negative_weights must be {logits.shape}, got "
                       f"{weights.shape}.")
    weights = jnp.where(jnp.eye(weights.shape[0], dtype=bool), 1.0, weights)
    kept = weights > 0
    # The inner where keeps log() away from 0 so no NaN reaches the (unused) gradient.
    log_weights = jnp.where(kept, jnp.log(jnp.where(kept, weights, 1.0)), -jnp.inf)
  loss = _one_way_info_nce(logits, log_weights)
  if symmetric:
    log_weights_t = None if log_weights is None else log_weights.T
    loss = 0.5 * (loss + _one_way_info_nce(logits.T, log_weights_t))
  return jnp.mean(loss)


def pose_aware_weights(viewpoint: jnp.ndarray) -> jnp.ndarray:
  """PoseContrast weights of negatives: ``geodesic(pose_i, pose_j) / 180``, ``[batch, batch]``.

  Args:
    viewpoint: ``[batch, 3]`` in degrees. Equal poses weigh 0, opposite rotations 1.
  """
  viewpoint = jnp.asarray(viewpoint, jnp.float32)
  distance = geometry.rotation_error(viewpoint[:, None, :], viewpoint[None, :, :])
  return jax.lax.stop_gradient(distance / 180.0)


def contrastive_kd(student_emb: jnp.ndarray, teacher_emb: jnp.ndarray, temperature: float, *,
                   pose_weights: jnp.ndarray | None = None, symmetric: bool = False
                   ) -> jnp.ndarray:
  """InfoNCE of student embeddings ``[batch, D]`` against frozen teacher ones ``[batch, D]``.

  ``pose_weights`` is an optional ``[batch, batch]`` weighting of the negatives (see
  ``pose_aware_weights``). No gradient flows into the teacher side.
  """
  return info_nce(student_emb, jax.lax.stop_gradient(teacher_emb), temperature,
                  negative_weights=pose_weights, symmetric=symmetric)


def _softmax_kl(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray,
                temperature: float) -> jnp.ndarray:
  """``KL(softmax(teacher / T) || softmax(student / T))`` over the last axis, ``[batch]``."""
  teacher_log_p = jax.nn.log_softmax(
      jax.lax.stop_gradient(jnp.asarray(teacher_logits, jnp.float32)) / temperature, axis=-1)
  student_log_p = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32) / temperature,
                                     axis=-1)
  return optax.losses.kl_divergence_with_log_targets(student_log_p, teacher_log_p)


def logit_kd(student_pose: Pose, teacher_pose: Pose, temperature: float) -> jnp.ndarray:
  """Bin-logit distillation: KL(teacher || student) at temperature T, summed over the 3 heads,
  times ``T^2`` (Hinton et al., keeps gradients comparable across T), mean over the batch."""
  kl = sum(_softmax_kl(s, t, temperature)
           for s, t in zip(student_pose["logits"], teacher_pose["logits"], strict=True))
  return temperature**2 * jnp.mean(kl)


def feature_kd(student_feature: jnp.ndarray, teacher_feature: jnp.ndarray,
               temperature: float) -> jnp.ndarray:
  """KL between softmaxes over the feature axis of ``[batch, D]`` features, times ``T^2``, mean
  over the batch (teacher side frozen)."""
  if student_feature.shape != teacher_feature.shape:
    raise ValueError(f"kdpose/losses.py: feature_kd shapes differ: {student_feature.shape} vs "
                     f"{teacher_feature.shape}.")
  return temperature**2 * jnp.mean(_softmax_kl(student_feature, teacher_feature, temperature))
