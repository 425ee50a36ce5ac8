"""PointNet shape encoder (Qi et al. 2017) without the transform nets, as in PoseFromShape.

A shared per-point MLP (a 1x1 convolution over points, written as ``Dense`` on the last axis)
with BatchNorm and ReLU after every layer, then a max over points. BatchNorm reduces over batch
and points together, so the encoder is invariant to the order of the points in train mode too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdpose.models import layers


class PointNet(nn.Module):
  """Point cloud ``[batch, N, 3]`` -> global shape feature ``[batch, widths[-1]]`` float32.

  Attributes:
    widths: output width of each shared layer (anchor: 64, 128, 1024).
    dtype: compute dtype; parameters stay float32.
  """

  widths: Sequence[int] = (64, 128, 1024)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, points: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    if points.ndim != 3 or points.shape[-1] != 3:
      raise ValueError(f"kdpose/models/pointnet.py: expected points [batch, N, 3], got "
                       f"{points.shape}.")
    if not self.widths:
      raise ValueError("kdpose/models/pointnet.py: widths must name at least one layer.")
    x = jnp.asarray(points, self.dtype)
    for width in self.widths:
      x = layers.dense_bn_relu(x, width, train=train, dtype=self.dtype)
    return jnp.max(x, axis=1).astype(jnp.float32)
