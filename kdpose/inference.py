"""Viewpoint prediction from object crops: the one code path of evaluation and of the predictor.

Pure jax (no TensorFlow, no training code), jit-ready. Optional flip test (as PoseContrast's
evaluation offers): the model also sees the horizontally mirrored crop, its prediction is mapped
back with ``geometry.flip_viewpoint``, and each sample keeps whichever of the two predictions is
more confident about its azimuth bin.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdpose import augment, geometry
from kdpose.models import heads


def _mirror_points(points: jax.Array) -> jax.Array:
  """The shape seen in a mirrored image: object x -> -x.

  Mirroring the camera x axis turns ``R(a, e, t)`` into ``R(-a, e, -t)`` applied to the object
  mirrored in its own x, so the flipped label goes with the mirrored shape.
  """
  return points * jnp.array([-1.0, 1.0, 1.0], points.dtype)


def predict_crops(model: nn.Module, variables: dict[str, Any], crops: jax.Array, *,
                  bin_size: float, flip_test: bool = False, points: jax.Array | None = None
                  ) -> tuple[jax.Array, jax.Array]:
  """Viewpoints of crops.

  Args:
    model: a student (``model.apply(variables, crops, train=False)``) or, with ``points``, a
      teacher (``model.apply(variables, crops, points, train=False)``).
    variables: ``{"params", "batch_stats"}``.
    crops: float32 ``[B, S, S, 3]``, RGB in [0, 1] (``augment.crop_images``); the model's
      encoder normalises them as its weights expect.
    bin_size: pose bin size, degrees.
    flip_test: also predict on the mirrored crops and keep, per sample, the prediction whose
      azimuth-bin confidence is higher (the unflipped one on ties).
    points: optional ``[B, N, 3]`` shapes for a teacher.

  Returns:
    viewpoint ``[B, 3]`` in degrees (azimuth, elevation, in-plane) and confidence ``[B, 3]``,
    the softmax probability of each angle's chosen bin.
  """
  viewpoint, confidence = _decode(model, variables, crops, points, bin_size)
  if not flip_test:
    return viewpoint, confidence
  # A second pass, not a doubled batch: concatenating would reshard a batch split over devices.
  flipped, flipped_conf = _decode(model, variables, crops[:, :, ::-1],
                                  None if points is None else _mirror_points(points), bin_size)
  use_flipped = (flipped_conf[:, 0] > confidence[:, 0])[:, None]
  return (jnp.where(use_flipped, geometry.flip_viewpoint(flipped), viewpoint),
          jnp.where(use_flipped, flipped_conf, confidence))


def _decode(model: nn.Module, variables: dict[str, Any], crops: jax.Array,
            points: jax.Array | None, bin_size: float) -> tuple[jax.Array, jax.Array]:
  inputs = (crops,) if points is None else (crops, points)
  return heads.decode_pose(model.apply(variables, *inputs, train=False)["pose"], bin_size)


def predict_boxes(model: nn.Module, variables: dict[str, Any], images: jax.Array,
                  boxes: jax.Array, *, image_size: int, bin_size: float, flip_test: bool = False,
                  points: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """``predict_crops`` on the exact box crops (``augment.crop_images``) of uint8 images.

  Args:
    images: uint8 ``[B, H, H, 3]``.
    boxes: float ``[B, 4]`` = (x1, y1, x2, y2) in pixels of those images.
    image_size: side of the network input, pixels.

  Returns:
    viewpoint ``[B, 3]`` (degrees) and confidence ``[B, 3]``, as ``predict_crops``.
  """
  crops = augment.crop_images(images, boxes, image_size)
  return predict_crops(model, variables, crops, bin_size=bin_size, flip_test=flip_test,
                       points=points)
