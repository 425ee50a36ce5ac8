"""ResNet image encoders (He et al. 2016), as Flax linen modules that return pooled features.

Convolutions and BatchNorm compute in ``dtype`` (bfloat16 on accelerators, float32 on CPU) with
float32 parameters; BatchNorm statistics are reduced in float32 whatever the compute dtype. The
stride of a bottleneck block sits on its 3x3 convolution (torchvision's "v1.5"), and the last
BatchNorm of each residual branch starts at zero scale so every block starts as the identity.

Trunk sizes (no classifier): ResNet-18 11,176,512 parameters, ResNet-50 23,508,032.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

BLOCK_TYPES = ("basic", "bottleneck")
_BOTTLENECK_EXPANSION = 4


class ResidualBlock(nn.Module):
  """One residual block, ``basic`` (two 3x3) or ``bottleneck`` (1x1, 3x3, 1x1 at 4x width)."""

  width: int
  strides: int
  block: str
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    strides = (self.strides, self.strides)
    if self.block == "basic":
      out_width = self.width
      y = nn.relu(norm()(conv(self.width, (3, 3), strides)(x)))
      y = conv(self.width, (3, 3))(y)
    else:
      out_width = self.width * _BOTTLENECK_EXPANSION
      y = nn.relu(norm()(conv(self.width, (1, 1))(x)))
      y = nn.relu(norm()(conv(self.width, (3, 3), strides)(y)))
      y = conv(out_width, (1, 1))(y)
    y = norm(scale_init=nn.initializers.zeros)(y)
    residual = x
    if x.shape[-1] != out_width or self.strides != 1:
      residual = norm(name="proj_norm")(conv(out_width, (1, 1), strides, name="proj_conv")(x))
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """A ResNet trunk: stem (7x7/2 conv, 3x3/2 max-pool), stages, global average pool.

  Attributes:
    stage_sizes: number of blocks per stage.
    stage_widths: base width of each stage (the output width is 4x that for bottleneck blocks).
    block: one of ``BLOCK_TYPES``.
    dtype: compute dtype.
  """

  stage_sizes: Sequence[int]
  stage_widths: Sequence[int]
  block: str = "basic"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Images ``[batch, H, W, 3]`` (ImageNet-normalised) -> features ``[batch, C]`` float32."""
    if self.block not in BLOCK_TYPES:
      raise ValueError(f"kdpose/models/resnet.py: block={self.block!r}, expected one of "
                       f"{BLOCK_TYPES}.")
    if len(self.stage_sizes) != len(self.stage_widths):
      raise ValueError(f"kdpose/models/resnet.py: stage_sizes {self.stage_sizes} and "
                       f"stage_widths {self.stage_widths} differ in length.")
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"kdpose/models/resnet.py: expected images [batch, H, W, 3], got "
                       f"{images.shape}.")
    x = jnp.asarray(images, self.dtype)
    x = nn.Conv(self.stage_widths[0], (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                dtype=self.dtype, name="stem_conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name="stem_norm")(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths, strict=True)):
      for index in range(size):
        strides = 2 if stage > 0 and index == 0 else 1
        x = ResidualBlock(width, strides, self.block, dtype=self.dtype,
                          name=f"stage{stage}_block{index}")(x, train=train)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


resnet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), stage_widths=(64, 128, 256, 512))
resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), stage_widths=(64, 128, 256, 512),
                             block="bottleneck")
# For CPU runs: the ResNet-18 layout at a quarter of the width and one block per stage.
resnet_small = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), stage_widths=(16, 32, 64, 128))
# For tests: two stages, the smallest net that still has a strided projection shortcut.
resnet_tiny = functools.partial(ResNet, stage_sizes=(1, 1), stage_widths=(8, 16))
