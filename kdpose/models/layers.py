"""Layers the models share."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


def dense_bn_relu(x: jnp.ndarray, width: int, *, train: bool, dtype: Any) -> jnp.ndarray:
  """``Dense(width) -> BatchNorm -> ReLU`` on the last axis of ``[..., C]``.

  Call it inside a ``@nn.compact`` method: the layers become submodules of that module.
  """
  x = nn.Dense(width, use_bias=False, dtype=dtype)(x)  # BatchNorm supplies the bias.
  x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)(x)
  return nn.relu(x)
