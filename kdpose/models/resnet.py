"""ResNet image encoders (He et al. 2016), as Flax linen modules that return pooled features.

Convolutions and BatchNorm compute in ``dtype`` (bfloat16 on accelerators, float32 on CPU) with
float32 parameters; BatchNorm statistics are reduced in float32 whatever the compute dtype. The
layout is torchvision's, so its checkpoints (and MoCo's) load as they are (``pretrained``): the
stride of a bottleneck block sits on its 3x3 convolution ("v1.5"), 3x3 convolutions pad one
pixel on every side, and BatchNorm has epsilon 1e-5. The last BatchNorm of each residual branch
starts at zero scale so every block of a randomly initialised net starts as the identity. Inputs
are RGB in [0, 1], normalised inside with the ImageNet mean and std.

Submodules: ``stem_conv``/``stem_norm`` (stage 0) and ``stage{s}_block{i}`` (stage s + 1).

Trunk sizes (no classifier): ResNet-18 11,176,512 parameters, ResNet-50 23,508,032.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdpose.models import encoder_parts

BLOCK_TYPES = ("basic", "bottleneck")
_BOTTLENECK_EXPANSION = 4


class ResidualBlock(nn.Module):
  """One residual block, ``basic`` (two 3x3) or ``bottleneck`` (1x1, 3x3, 1x1 at 4x width)."""

  width: int
  strides: int
  block: str
  frozen: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)
    conv3x3 = functools.partial(conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)))
    norm = functools.partial(encoder_parts.batch_norm, train=train, frozen=self.frozen,
                             momentum=0.9, epsilon=1e-5, dtype=self.dtype)
    strides = (self.strides, self.strides)
    if self.block == "basic":
      out_width = self.width
      y = nn.relu(norm()(conv3x3(self.width, strides=strides)(x)))
      y = conv3x3(self.width)(y)
    else:
      out_width = self.width * _BOTTLENECK_EXPANSION
      y = nn.relu(norm()(conv(self.width, (1, 1))(x)))
      y = nn.relu(norm()(conv3x3(self.width, strides=strides)(y)))
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
    frozen_stages: stages 0 .. N-1 frozen (see ``encoder_parts``; the stem is stage 0).
    frozen_norm: every BatchNorm on its running statistics, also in training.
    pool_grid: the last map is averaged over pool_grid x pool_grid cells (``global_pool``).
    dtype: compute dtype.
  """

  stage_sizes: Sequence[int]
  stage_widths: Sequence[int]
  block: str = "basic"
  frozen_stages: int = 0
  frozen_norm: bool = False
  pool_grid: int = 1
  dtype: Any = jnp.float32
  input_mean: tuple[float, ...] = encoder_parts.IMAGENET_MEAN
  input_std: tuple[float, ...] = encoder_parts.IMAGENET_STD

  @nn.compact
  def __call__(self, images: jnp.ndarray, *, train: bool, return_map: bool = False):
    """Images ``[batch, H, W, 3]`` RGB in [0, 1] -> features ``[batch, C]`` float32 (with
    ``return_map`` also the last map ``[batch, H/32, W/32, C]``)."""
    if self.block not in BLOCK_TYPES:
      raise ValueError(f"kdpose/models/resnet.py: block={self.block!r}, expected one of "
                       f"{BLOCK_TYPES}.")
    if len(self.stage_sizes) != len(self.stage_widths):
      raise ValueError(f"kdpose/models/resnet.py: stage_sizes {self.stage_sizes} and "
                       f"stage_widths {self.stage_widths} differ in length.")
    frozen = lambda stage: self.frozen_norm or stage < self.frozen_stages
    x = encoder_parts.normalize(images, self.input_mean, self.input_std, self.dtype)
    x = nn.Conv(self.stage_widths[0], (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                dtype=self.dtype, name="stem_conv")(x)
    x = encoder_parts.batch_norm(train=train, frozen=frozen(0), momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype, name="stem_norm")(x)
    x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = encoder_parts.stop_if_frozen(x, 0, self.frozen_stages)
    for stage, (size, width) in enumerate(zip(self.stage_sizes, self.stage_widths, strict=True)):
      for index in range(size):
        strides = 2 if stage > 0 and index == 0 else 1
        x = ResidualBlock(width, strides, self.block, frozen=frozen(stage + 1), dtype=self.dtype,
                          name=f"stage{stage}_block{index}")(x, train=train)
      x = encoder_parts.stop_if_frozen(x, stage + 1, self.frozen_stages)
    return encoder_parts.global_pool(x, return_map, self.pool_grid)


resnet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), stage_widths=(64, 128, 256, 512))
resnet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), stage_widths=(64, 128, 256, 512),
                             block="bottleneck")
# For CPU runs: the ResNet-18 layout at a quarter of the width and one block per stage.
resnet_small = functools.partial(ResNet, stage_sizes=(1, 1, 1, 1), stage_widths=(16, 32, 64, 128))
# For tests: two stages, the smallest net that still has a strided projection shortcut.
resnet_tiny = functools.partial(ResNet, stage_sizes=(1, 1), stage_widths=(8, 16))
