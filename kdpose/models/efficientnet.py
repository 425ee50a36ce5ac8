"""EfficientNet-Lite image encoders (Tan & Le 2019, the "lite" variant for mobile CPUs).

The lite variant drops squeeze-excite, uses ReLU6, and keeps the stem (32 channels), the head
(1280 channels) and the repeats of the first and last stage fixed while width and depth scale.
This layout and these settings are those of the official TF checkpoints (and of the PyTorch
conversions kdpose loads, see ``pretrained``): TF "same" padding (the extra pixel of a stride-2
convolution goes after), bias-free convolutions, BatchNorm epsilon 1e-3 and momentum 0.99.
Inputs are RGB in [0, 1], normalised inside as the checkpoints expect, ``(x - 127) / 128`` on
[0, 255] pixels.

Submodules: ``stem_conv``/``stem_norm``, ``stage{s}_block{i}`` (s in 0..6) and
``head_conv``/``head_norm``, plus ``classifier`` when ``num_classes > 0``.
Lite0 has 16 blocks and 3,371,008 trunk parameters (4,652,008 with the 1000-class classifier).
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdpose.models import encoder_parts
from kdpose.models.depthwise import DepthwiseConv


class StageArgs(NamedTuple):
  """One stage of the B0 layout before scaling."""

  repeats: int
  kernel_size: int
  strides: int
  expand_ratio: int
  in_filters: int
  out_filters: int


B0_STAGES = (
    StageArgs(1, 3, 1, 1, 32, 16), StageArgs(2, 3, 2, 6, 16, 24), StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80), StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192), StageArgs(1, 3, 1, 6, 192, 320),
)
STEM_FILTERS, HEAD_FILTERS = 32, 1280
_BN = dict(momentum=0.99, epsilon=1e-3)


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """Channels scaled by ``width``, rounded to a multiple of ``divisor`` (at most 10% down)."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * scaled else rounded


def stage_layout(width: float, depth: float) -> list[StageArgs]:
  """The scaled stages; the first and last keep their repeats (lite's fixed head and stem)."""
  layout = []
  for index, args in enumerate(B0_STAGES):
    fixed = index in (0, len(B0_STAGES) - 1)
    layout.append(args._replace(
        repeats=args.repeats if fixed else int(math.ceil(depth * args.repeats)),
        in_filters=round_filters(args.in_filters, width),
        out_filters=round_filters(args.out_filters, width)))
  return layout


class MBConv(nn.Module):
  """Inverted residual block: 1x1 expand, depthwise, 1x1 project (+ identity if shapes agree)."""

  kernel_size: int
  strides: int
  expand_ratio: int
  out_filters: int
  frozen: bool = False
  depthwise: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, kernel_size=(1, 1), use_bias=False, dtype=self.dtype)
    norm = functools.partial(encoder_parts.batch_norm, train=train, frozen=self.frozen,
                             dtype=self.dtype, **_BN)
    y = x
    if self.expand_ratio != 1:
      y = nn.relu6(norm(name="expand_norm")(
          conv(x.shape[-1] * self.expand_ratio, name="expand_conv")(y)))
    y = DepthwiseConv(self.kernel_size, self.strides, self.depthwise, self.dtype,
                      name="depthwise_conv")(y)
    y = nn.relu6(norm(name="depthwise_norm")(y))
    y = norm(name="project_norm")(conv(self.out_filters, name="project_conv")(y))
    if self.strides == 1 and x.shape[-1] == self.out_filters:
      y = y + x
    return y


class EfficientNetLite(nn.Module):
  """EfficientNet-Lite trunk -> pooled features ``[batch, 1280]`` float32 (or logits).

  Attributes:
    width: channel multiplier (lite0/1: 1.0, lite2: 1.1).
    depth: repeat multiplier (lite0: 1.0, lite1: 1.1, lite2: 1.2).
    num_classes: > 0 adds the ImageNet classifier and returns its logits instead.
    frozen_stages: stages 0 .. N-1 frozen (see ``encoder_parts``; the stem is stage 0).
    frozen_norm: every BatchNorm on its running statistics, also in training.
    pool_grid: the last map is averaged over pool_grid x pool_grid cells (``global_pool``).
    depthwise: depthwise implementation (``depthwise.IMPLEMENTATIONS``).
    dtype: compute dtype.
  """

  width: float = 1.0
  depth: float = 1.0
  num_classes: int = 0
  frozen_stages: int = 0
  frozen_norm: bool = False
  pool_grid: int = 1
  depthwise: str = "auto"
  dtype: Any = jnp.float32
  input_mean: tuple[float, ...] = encoder_parts.LITE_MEAN
  input_std: tuple[float, ...] = encoder_parts.LITE_STD

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool, return_map: bool = False):
    """Images ``[batch, H, W, 3]`` RGB in [0, 1] -> features ``[batch, 1280]`` float32
    (with ``return_map`` also the last map ``[batch, H/32, W/32, 1280]``)."""
    frozen = lambda stage: self.frozen_norm or stage < self.frozen_stages
    norm = functools.partial(encoder_parts.batch_norm, train=train, dtype=self.dtype, **_BN)
    x = encoder_parts.normalize(images, self.input_mean, self.input_std, self.dtype)
    x = nn.Conv(STEM_FILTERS, (3, 3), (2, 2), use_bias=False, dtype=self.dtype,
                name="stem_conv")(x)
    x = nn.relu6(norm(frozen=frozen(0), name="stem_norm")(x))
    x = encoder_parts.stop_if_frozen(x, 0, self.frozen_stages)
    for stage, args in enumerate(stage_layout(self.width, self.depth)):
      for index in range(args.repeats):
        x = MBConv(args.kernel_size, args.strides if index == 0 else 1, args.expand_ratio,
                   args.out_filters, frozen=frozen(stage + 1), depthwise=self.depthwise,
                   dtype=self.dtype, name=f"stage{stage}_block{index}")(x, train=train)
      x = encoder_parts.stop_if_frozen(x, stage + 1, self.frozen_stages)
    x = nn.Conv(HEAD_FILTERS, (1, 1), use_bias=False, dtype=self.dtype, name="head_conv")(x)
    x = nn.relu6(norm(frozen=frozen(encoder_parts.LAST_STAGE), name="head_norm")(x))
    x = encoder_parts.stop_if_frozen(x, encoder_parts.LAST_STAGE, self.frozen_stages)
    features = encoder_parts.global_pool(x, return_map, self.pool_grid)
    if self.num_classes:
      pooled = features[0] if return_map else features
      return nn.Dense(self.num_classes, dtype=jnp.float32, name="classifier")(pooled)
    return features


efficientnet_lite0 = functools.partial(EfficientNetLite, width=1.0, depth=1.0)
efficientnet_lite1 = functools.partial(EfficientNetLite, width=1.0, depth=1.1)
efficientnet_lite2 = functools.partial(EfficientNetLite, width=1.1, depth=1.2)
