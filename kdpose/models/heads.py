"""The dense parts on top of an encoder: MLP blocks and the pose heads, and pose decoding.

A pose pytree holds, per angle (azimuth, elevation, in-plane), bin logits and one raw regression
value ``r`` per bin; the predicted in-bin offset is ``tanh(r) / 2`` in (-0.5, 0.5):

  {"logits": (az [batch, 24], el [batch, 12], ip [batch, 24]),
   "offsets": (az [batch, 24], el [batch, 12], ip [batch, 24])}   # 15 degree bins
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdpose import geometry
from kdpose.models import layers

Pose = dict[str, tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]]


class MLP(nn.Module):
  """Hidden ``Dense -> BatchNorm -> ReLU`` layers, then a linear ``Dense(out_dim)``.

  ``[batch, C]`` -> ``[batch, out_dim]`` in ``dtype`` (the caller picks the final activation).
  """

  hidden_widths: Sequence[int]
  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    x = jnp.asarray(x, self.dtype)
    for width in self.hidden_widths:
      x = layers.dense_bn_relu(x, width, train=train, dtype=self.dtype)
    return nn.Dense(self.out_dim, dtype=self.dtype)(x)


class PoseHeads(nn.Module):
  """Feature ``[batch, C]`` -> pose pytree (see the module docstring), float32.

  The heads are two small Dense layers; they run in float32 whatever the trunk's dtype so that
  logits and offsets keep full precision for the losses and decoding.
  """

  bin_size: float = geometry.DEFAULT_BIN_SIZE

  @nn.compact
  def __call__(self, feature: jnp.ndarray) -> Pose:
    counts = geometry.num_bins(self.bin_size)
    splits = np.cumsum(counts)[:-1]
    feature = jnp.asarray(feature, jnp.float32)
    logits = nn.Dense(sum(counts), name="logits")(feature)
    offsets = nn.Dense(sum(counts), name="offsets")(feature)
    return {"logits": tuple(jnp.split(logits, splits, axis=-1)),
            "offsets": tuple(jnp.split(offsets, splits, axis=-1))}


def _at_bins(values: jnp.ndarray, bins: jnp.ndarray) -> jnp.ndarray:
  """``values[b, bins[b]]`` for ``values [batch, n]`` and ``bins [batch]`` -> ``[batch]``."""
  return jnp.take_along_axis(values, bins[:, None], axis=-1)[:, 0]


def decode_pose(pose: Pose, bin_size: float = geometry.DEFAULT_BIN_SIZE
                ) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Decodes a pose pytree into a viewpoint and a confidence per angle.

  Each angle is ``(argmax_bin + 0.5 + tanh(r_argmax) / 2) * bin_size`` from the start of its
  range, mapped back into the range.

  Returns:
    viewpoint ``[batch, 3]`` in degrees (azimuth, elevation, in-plane) and confidence
    ``[batch, 3]``, the softmax probability of the chosen bin.
  """
  counts = geometry.num_bins(bin_size)
  got = tuple(logits.shape[-1] for logits in pose["logits"])
  if got != counts:
    raise ValueError(f"kdpose/models/heads.py: pose has {got} bins, bin_size={bin_size} "
                     f"needs {counts}.")
  bins, offsets, confidence = [], [], []
  for logits, raw in zip(pose["logits"], pose["offsets"], strict=True):
    logits = jnp.asarray(logits, jnp.float32)
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    bins.append(best)
    offsets.append(jnp.tanh(_at_bins(jnp.asarray(raw, jnp.float32), best)) / 2.0)
    confidence.append(_at_bins(jax.nn.softmax(logits, axis=-1), best))
  viewpoint = geometry.decode_viewpoint(jnp.stack(bins, -1), jnp.stack(offsets, -1), bin_size)
  return viewpoint, jnp.stack(confidence, -1)
