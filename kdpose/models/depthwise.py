"""Depthwise convolution with TF "same" padding, in the implementation each backend runs fast.

XLA:CPU lowers grouped convolutions (``feature_group_count = C``) to a slow generic loop: an
EfficientNet-Lite0 train step ran 4-5 images/s on 2 cores that way. Written as ``k * k`` shifted
multiply-adds (a strided slice of the padded input times one kernel row each), XLA fuses the
sum into one elementwise loop, and the input gradient likewise. The kernel gradient, ``k * k``
reductions over the whole batch, is the costly part: autodiff makes each one a pass over the
activations in memory; ``_kernel_grad`` runs them a chunk of images at a time (a Lite0 train
step on 2 cores: 17 -> 22 images/s). GPUs and TPUs have fast native depthwise kernels, so there
the library convolution is used. Both give the same outputs and gradients (tested), and share one
parameter, ``kernel [k, k, 1, C]`` (``nn.Conv``'s layout), so a checkpoint runs on either.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "shifted", "grouped")
_GRAD_CHUNK = 16  # images per step of the kernel-gradient loop (measured: 4-64 on 2 cores).


def _implementation(name: str) -> str:
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"kdpose/models/depthwise.py: implementation {name!r}, expected one of "
                     f"{IMPLEMENTATIONS}.")
  if name == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "grouped"
  return name


def _tap(x: jax.Array, i: int, j: int, stride: int, out_shape: tuple[int, int]) -> jax.Array:
  """The padded input ``[B, H, W, C]`` seen by kernel entry ``(i, j)``: ``[B, h, w, C]``."""
  batch, _, _, channels = x.shape
  return jax.lax.slice(x, (0, i, j, 0), (batch, i + stride * (out_shape[0] - 1) + 1,
                                         j + stride * (out_shape[1] - 1) + 1, channels),
                       (1, stride, stride, 1))


def _out_shape(padded: tuple[int, ...], k: int, stride: int) -> tuple[int, int]:
  return (padded[1] - k) // stride + 1, (padded[2] - k) // stride + 1


def _pad(x: jax.Array, padding) -> jax.Array:
  return jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))


def _shifted_sum(x: jax.Array, kernel: jax.Array, stride: int, padding) -> jax.Array:
  k = kernel.shape[0]
  x = _pad(x, padding)
  out_shape = _out_shape(x.shape, k, stride)
  taps = (_tap(x, i, j, stride, out_shape) * kernel[i, j, 0] for i in range(k) for j in range(k))
  return functools.reduce(jnp.add, taps)


def _kernel_grad(x: jax.Array, grad: jax.Array, k: int, stride: int, padding) -> jax.Array:
  """``d loss / d kernel [k, k, 1, C]`` from the input ``x`` and the output gradient ``grad``,
  summed a few images at a time.

  Iteration ``t`` takes images ``t, t + n, t + 2n, ...`` (``n`` iterations): the batch reshaped
  to ``[chunk, n, ...]`` keeps its leading axis, the one sharded over devices, so with the batch
  split over ``D`` devices (``D`` dividing ``chunk``) each device sums its own images and the
  per-image sums are added across devices once, after the loop: no activation leaves its device
  (indexing the sharded axis instead all-gathers every activation of the loop)."""
  x = _pad(x, padding)
  batch, channels = x.shape[0], x.shape[-1]
  chunk = max(n for n in range(1, _GRAD_CHUNK + 1) if batch % n == 0)
  xs = x.reshape(chunk, batch // chunk, *x.shape[1:])
  grads = grad.reshape(chunk, batch // chunk, *grad.shape[1:])
  out_shape = grad.shape[1:3]

  def add_chunk(index, total):
    taps = [jnp.sum(_tap(xs[:, index], i, j, stride, out_shape) * grads[:, index], axis=(1, 2))
            for i in range(k) for j in range(k)]
    return total + jnp.stack(taps, axis=1)

  per_image = jax.lax.fori_loop(0, batch // chunk, add_chunk,
                                jnp.zeros((chunk, k * k, channels), x.dtype))
  return per_image.sum(axis=0).reshape(k, k, 1, channels)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def shifted_depthwise(x: jax.Array, kernel: jax.Array, stride: int, padding) -> jax.Array:
  """``x [B, H, W, C]`` convolved per channel with ``kernel [k, k, 1, C]`` as a sum of
  ``k * k`` strided slices of the padded input, each times one kernel entry per channel.
  ``padding``: ((top, bottom), (left, right)) pixels."""
  return _shifted_sum(x, kernel, stride, padding)


def _forward(x, kernel, stride, padding):
  return _shifted_sum(x, kernel, stride, padding), (x, kernel)


def _backward(stride, padding, residuals, grad):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda inputs: _shifted_sum(inputs, kernel, stride, padding), x)
  return input_vjp(grad)[0], _kernel_grad(x, grad, kernel.shape[0], stride, padding)


shifted_depthwise.defvjp(_forward, _backward)


class DepthwiseConv(nn.Module):
  """Bias-free depthwise convolution ``[B, H, W, C] -> [B, H', W', C]``, TF "same" padding.

  Attributes:
    kernel_size: side of the square kernel.
    strides: stride in both directions.
    implementation: ``auto`` (shifted on CPU, grouped elsewhere), ``shifted`` or ``grouped``.
    dtype: compute dtype (the parameter stays float32).
  """

  kernel_size: int
  strides: int = 1
  implementation: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels, k = x.shape[-1], self.kernel_size
    # nn.Conv's initialiser and layout for feature_group_count = C.
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, 1, channels),
                        jnp.float32)
    x = jnp.asarray(x, self.dtype)
    kernel = jnp.asarray(kernel, self.dtype)
    padding = tuple(map(tuple, jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (self.strides,) * 2,
                                                       "SAME")))
    if _implementation(self.implementation) == "shifted":
      return shifted_depthwise(x, kernel, self.strides, padding)
    return jax.lax.conv_general_dilated(
        x, kernel, (self.strides,) * 2, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=channels)
