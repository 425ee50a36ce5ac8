"""What every image encoder shares: its input normalisation, its stage names, frozen stages.

Every encoder takes RGB images in [0, 1] and normalises them itself with the constants its
pretrained weights were trained with, so training, evaluation, the export and the predictor
cannot feed an encoder the wrong normalisation.

Top-level submodules are named by stage: ``stem_*`` is stage 0, ``stage{s}_*`` is stage
``s + 1`` and anything after the last stage (a head convolution, a classifier) comes last.
``frozen_stages = N`` freezes stages ``0 .. N-1``: no gradient reaches them (the stop sits on
their output, so no backward pass runs through them) and their BatchNorm runs on its running
statistics; ``optimizers`` keeps their parameters still (no weight decay either).
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# torchvision's (and MoCo's) ImageNet statistics, RGB, for images in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The EfficientNet-Lite checkpoints: (x - 127) / 128 on [0, 255] pixels.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

_STAGE_NAME = re.compile(r"stage(\d+)_")
LAST_STAGE = 1_000  # the stage index of what follows the stages (heads): frozen only on request.


def normalize(images: jax.Array, mean: tuple[float, ...], std: tuple[float, ...],
              dtype: Any) -> jax.Array:
  """Images ``[batch, H, W, 3]`` RGB in [0, 1] -> ``(images - mean) / std`` in ``dtype``."""
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"kdpose/models: expected images [batch, H, W, 3], got {images.shape}.")
  scaled = (jnp.asarray(images, jnp.float32) - np.asarray(mean, np.float32)) / np.asarray(
      std, np.float32)
  return scaled.astype(dtype)


def stage_index(name: str) -> int:
  """The stage of a top-level encoder submodule (see the module docstring)."""
  if name.startswith("stem"):
    return 0
  match = _STAGE_NAME.match(name)
  return int(match.group(1)) + 1 if match else LAST_STAGE


def is_frozen(name: str, frozen_stages: int) -> bool:
  """Whether the top-level encoder submodule ``name`` is frozen."""
  return stage_index(name) < frozen_stages


def batch_norm(*, train: bool, frozen: bool, **kwargs) -> nn.BatchNorm:
  """``nn.BatchNorm(**kwargs)`` on its running statistics at eval time and where frozen."""
  return nn.BatchNorm(use_running_average=not train or frozen, **kwargs)


def stop_if_frozen(x: jax.Array, stage: int, frozen_stages: int) -> jax.Array:
  """The output of ``stage``, cut from autodiff when that stage is frozen."""
  return jax.lax.stop_gradient(x) if stage < frozen_stages else x


def global_pool(x: jax.Array, return_map: bool, grid: int = 1
                ) -> jax.Array | tuple[jax.Array, jax.Array]:
  """The last map ``[batch, h, w, C]`` averaged over ``grid x grid`` cells -> features
  ``[batch, grid * grid * C]`` float32 (cells in row-major order; ``grid=1``: global average
  pooling), with the map itself if asked. A grid keeps the coarse layout that azimuth needs and
  global pooling drops."""
  b, h, w, c = x.shape
  if h % grid or w % grid:
    raise ValueError(f"kdpose/models: pool_grid={grid} does not divide the {h}x{w} feature map "
                     "(choose an image size whose last map it divides, e.g. a multiple of "
                     f"{32 * grid} px).")
  cells = x.reshape(b, grid, h // grid, grid, w // grid, c).mean(axis=(2, 4))
  pooled = cells.reshape(b, grid * grid * c).astype(jnp.float32)
  return (pooled, x) if return_map else pooled
