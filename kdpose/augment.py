"""On-device crop and augmentation of object images: pure jax, jit-ready, sharding-agnostic.

The host pipeline delivers ``images`` uint8 ``[batch, S, S, 3]`` and object ``boxes`` float32
``[batch, 4]`` = (x1, y1, x2, y2) in pixels of those images (continuous coordinates: pixel ``i``
covers [i, i + 1], its centre is at i + 0.5). Every geometric step of a sample (box jitter, the
keep-aspect resize with centred zero padding to a square, horizontal flip, in-plane rotation about
the crop centre) is folded into ONE affine map from output pixels to source pixels, sampled once
with bilinear interpolation. Photometric ops follow. Crops come out as RGB in [0, 1]: each image
encoder normalises its input itself (``models.encoder_parts``).

The output is ``Rotate_r(Flip(Crop(image)))``, so labels go through ``flip_viewpoint`` first and
then ``rotate_inplane(r)`` (positive ``r`` turns the content counter-clockwise: t -> t + r).

Randomness is drawn per sample from ``jax.random.split(rng, batch)``, so a sample's augmentation
depends only on ``rng`` and its index, never on how the batch is sharded.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from kdpose import geometry

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as torchvision's grayscale.
_ROTATION_MODES = ("uniform", "normal", "none")
_MIN_BLUR_SIGMA = 0.1  # pixels; blur sigma ~ U(0.1, blur_sigma_max) as in SimCLR-style blur.


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Training augmentation; frozen and hashable so it can be a static argument of ``jit``.

  A strength or probability of 0 removes its op from the compiled graph.
  """

  box_jitter: float = 0.1  # Each box side moves by U(-j, j) * box size (width or height).
  flip_prob: float = 0.5  # Horizontal flip.
  rotation_mode: str = "uniform"  # "uniform" | "normal" | "none".
  rotation_max_deg: float = 15.0  # uniform: r ~ U(-max, max), degrees.
  rotation_std_deg: float = 30.0  # normal: r ~ N(0, std) ...
  rotation_clip_deg: float = 60.0  # ... clipped to [-clip, clip], degrees.
  brightness: float = 0.4  # Factor ~ U(max(0, 1 - s), 1 + s), as torchvision's ColorJitter.
  contrast: float = 0.4
  saturation: float = 0.4
  grayscale_prob: float = 0.1
  blur_prob: float = 0.1
  blur_sigma_max: float = 1.0  # Gaussian sigma ~ U(0.1, max), output pixels; kernel radius 2 max.

  def __post_init__(self):
    if self.rotation_mode not in _ROTATION_MODES:
      raise ValueError(f"AugmentConfig: rotation_mode={self.rotation_mode!r} is not one of "
                       f"{_ROTATION_MODES}.")
    for name in ("flip_prob", "grayscale_prob", "blur_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"AugmentConfig: {name}={getattr(self, name)} is not in [0, 1].")
    for name in ("box_jitter", "rotation_max_deg", "rotation_std_deg", "rotation_clip_deg",
                 "brightness", "contrast", "saturation"):
      if getattr(self, name) < 0.0:
        raise ValueError(f"AugmentConfig: {name}={getattr(self, name)} is negative.")
    if self.box_jitter >= 0.5:
      raise ValueError(f"AugmentConfig: box_jitter={self.box_jitter} must be < 0.5 "
                       "(opposite sides could cross).")
    if self.blur_sigma_max < _MIN_BLUR_SIGMA:
      raise ValueError(f"AugmentConfig: blur_sigma_max={self.blur_sigma_max} is below "
                       f"{_MIN_BLUR_SIGMA}.")

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any]) -> AugmentConfig:
    """Builds a config from a dict or ``ConfigDict``; unknown keys raise ``ValueError``."""
    values = dict(values)
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ValueError(f"AugmentConfig.from_mapping: unknown keys {unknown}; known keys are "
                       f"{sorted(known)}.")
    return cls(**values)


class _Params(NamedTuple):
  """Per-sample augmentation parameters, each with a leading ``[batch]`` axis."""

  boxes: jax.Array  # [batch, 4] jittered boxes, pixels.
  flip: jax.Array  # [batch] bool.
  angle: jax.Array  # [batch] in-plane rotation, degrees (counter-clockwise).
  brightness: jax.Array  # [batch] factors.
  contrast: jax.Array
  saturation: jax.Array
  grayscale: jax.Array  # [batch] bool.
  blur_sigma: jax.Array  # [batch] pixels; 0 means no blur.


def _jitter_factor(key, strength: float):
  return jax.random.uniform(key, (), minval=max(0.0, 1.0 - strength), maxval=1.0 + strength)


def _sample_params(key, box, config: AugmentConfig) -> _Params:
  """Draws one sample's parameters (box ``[4]``); every draw is made whatever the config, so
  switching one op on or off leaves the randomness of the others unchanged."""
  keys = jax.random.split(key, 9)
  size = jnp.stack([box[2] - box[0], box[3] - box[1]] * 2)
  shift = jax.random.uniform(keys[0], (4,), minval=-1.0, maxval=1.0) * config.box_jitter * size
  if config.rotation_mode == "uniform":
    angle = jax.random.uniform(keys[1], (), minval=-1.0, maxval=1.0) * config.rotation_max_deg
  elif config.rotation_mode == "normal":
    angle = jnp.clip(jax.random.normal(keys[1], ()) * config.rotation_std_deg,
                     -config.rotation_clip_deg, config.rotation_clip_deg)
  else:
    angle = jnp.zeros(())
  blur = jax.random.bernoulli(keys[7], config.blur_prob)
  sigma = jax.random.uniform(keys[8], (), minval=_MIN_BLUR_SIGMA, maxval=config.blur_sigma_max)
  return _Params(
      boxes=box + shift,
      flip=jax.random.bernoulli(keys[2], config.flip_prob),
      angle=angle,
      brightness=_jitter_factor(keys[3], config.brightness),
      contrast=_jitter_factor(keys[4], config.contrast),
      saturation=_jitter_factor(keys[5], config.saturation),
      grayscale=jax.random.bernoulli(keys[6], config.grayscale_prob),
      blur_sigma=jnp.where(blur, sigma, 0.0))


def _sampling_table(boxes, flip, angle, out_size: int):
  """Per-sample affine map from output pixels to source pixels, ``[batch, 10]``:
  (cx, cy, dx/du, dx/dv, dy/du, dy/dv, x1, y1, x2, y2).

  It inverts: crop the box, scale it by ``out / max(w, h)`` around its centre into the output
  square, mirror x if ``flip``, then turn the content counter-clockwise by ``angle`` degrees.
  One stacked table (a concatenate of more than 8 pieces, which XLA never fuses) keeps the CPU
  compiler from recomputing the random draws behind it for every pixel.
  """
  x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
  # A box under one pixel (e.g. a padded batch entry) must not divide by zero.
  step = jnp.maximum(jnp.maximum(x2 - x1, y2 - y1), 1.0) / out_size  # source px per output px.
  rad = jnp.deg2rad(angle)
  cos, sin = step * jnp.cos(rad), step * jnp.sin(rad)
  mirror = jnp.where(flip, -1.0, 1.0)
  # Image y points down, so undoing a counter-clockwise turn is [[cos, -sin], [sin, cos]].
  return jnp.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0, mirror * cos, -mirror * sin, sin, cos,
                    x1, y1, x2, y2], axis=1)


def _source_coords(table, out_size: int, margin: int):
  """Source pixel coordinates ``x, y`` ``[batch, n, n]`` of the output pixel centres, where
  ``n = out + 2 * margin`` (the output square plus ``margin`` pixels on each side)."""
  grid = jnp.arange(out_size + 2 * margin, dtype=jnp.float32) + 0.5 - margin - out_size / 2.0
  u, v = grid[None, None, :], grid[None, :, None]  # output x (right), y (down), from the centre.
  cx, cy, xu, xv, yu, yv = (table[:, i, None, None] for i in range(6))
  return cx + xu * u + xv * v, cy + yu * u + yv * v


def _bilinear(images, x, y):
  """Samples uint8 ``images`` ``[batch, S, S, c]`` at ``x, y`` ``[batch, n, n]`` (pixels).

  Returns float32 ``[batch, n, n, c]`` in [0, 1]; outside the image counts as zero.
  """
  batch, height, width, channels = images.shape
  flat = images.reshape(batch, height * width, channels)
  x, y = x - 0.5, y - 0.5  # pixel-centre index coordinates.
  x0, y0 = jnp.floor(x), jnp.floor(y)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
  gather = jax.vmap(lambda img, idx: jnp.take(img, idx, axis=0, mode="clip"))

  def corner(dx, dy):
    xi, yi = x0 + dx, y0 + dy
    inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
    idx = jnp.where(inside, yi * width + xi, 0).reshape(batch, -1)
    values = gather(flat, idx).reshape(*x.shape, channels).astype(jnp.float32)
    return values * inside[..., None]

  top = corner(0, 0) * (1.0 - fx) + corner(1, 0) * fx
  bottom = corner(0, 1) * (1.0 - fx) + corner(1, 1) * fx
  return (top * (1.0 - fy) + bottom * fy) * (1.0 / 255.0)


def _warp(images, boxes, flip, angle, out_size: int, margin: int = 0):
  """Geometric part: ``[batch, n, n, c]`` in [0, 1] with zero padding and the valid mask
  ``[batch, n, n, 1]`` (1 where the pixel comes from inside the box), ``n = out + 2 * margin``."""
  table = _sampling_table(boxes, flip, angle, out_size)
  x, y = _source_coords(table, out_size, margin)
  x1, y1, x2, y2 = (table[:, i, None, None] for i in range(6, 10))
  mask = ((x >= x1) & (x <= x2) & (y >= y1) & (y <= y2))[..., None].astype(jnp.float32)
  return _bilinear(images, x, y) * mask, mask


def _centre(images, margin: int):
  """Drops ``margin`` pixels on each side of ``[batch, h, w, c]``."""
  return images[:, margin:images.shape[1] - margin, margin:images.shape[2] - margin]


def _with_luma(images):
  """uint8 ``[batch, S, S, 3]`` -> ``[batch, S, S, 4]`` with the rounded luma appended.

  Interpolation is linear, so sampling the luma channel gives the luma of the sampled image (up
  to rounding, which PIL's grayscale also does); XLA then never recomputes the interpolation of
  three channels to get one.
  """
  rgb = images.astype(jnp.float32)
  # Written per channel: a reduction over the 3-wide minor axis compiles to a slow loop on CPU.
  luma = rgb[..., 0] * _LUMA[0] + rgb[..., 1] * _LUMA[1] + rgb[..., 2] * _LUMA[2]
  luma = jnp.round(luma).astype(jnp.uint8)
  return jnp.concatenate([images, luma[..., None]], axis=-1)


def _box_mean(channel, boxes):
  """Mean of ``channel`` ``[batch, S, S]`` over the pixel centres inside ``boxes`` ``[batch, 4]``
  (pixels) and inside the image; ``[batch]``."""
  centres = jnp.arange(channel.shape[1], dtype=jnp.float32) + 0.5
  cols = (centres >= boxes[:, 0:1]) & (centres <= boxes[:, 2:3])  # [batch, S]
  rows = (centres >= boxes[:, 1:2]) & (centres <= boxes[:, 3:4])
  inside = rows[:, :, None] & cols[:, None, :]
  total = jnp.sum(jnp.where(inside, channel.astype(jnp.float32), 0.0), axis=(1, 2))
  return total / jnp.maximum(jnp.sum(inside, axis=(1, 2)), 1)


def _colour_jitter(images, luma_mean, params: _Params):
  """Brightness, contrast, saturation, then grayscale, on [0, 1] images ``[batch, h, w, 4]``
  (RGB + luma) -> ``[batch, h, w, 3]``; ``luma_mean`` ``[batch]`` is the contrast pivot.

  torchvision's blends in that order compose to one per-sample map
  ``alpha * rgb + beta * luma + gamma``, because each blend keeps that form. It is applied and
  clipped once (torchvision clips after every op; only saturated pixels differ).
  """
  b, c, s = params.brightness, params.contrast, params.saturation
  alpha = jnp.where(params.grayscale, 0.0, s * c * b)
  beta = c * b - alpha
  gamma = (1.0 - c) * b * luma_mean
  expand = lambda v: v[:, None, None, None]
  mapped = expand(alpha) * images[..., :3] + expand(beta) * images[..., 3:] + expand(gamma)
  return jnp.clip(mapped, 0.0, 1.0)


def _blur_radius(config: AugmentConfig) -> int:
  """Half-width in pixels of the blur kernel (2 sigma), 0 when blur is off."""
  return int(np.ceil(2.0 * config.blur_sigma_max)) if config.blur_prob > 0.0 else 0


def _gaussian_blur(images, sigma, radius: int):
  """Separable gaussian blur with per-sample ``sigma`` ``[batch]`` (pixels; 0 = no blur).

  Takes ``[batch, n, n, 3]`` and returns the ``[batch, n - 2 r, n - 2 r, 3]`` centre: the caller
  sampled ``radius`` extra pixels per side, so no padding op is needed (on CPU, XLA fuses a pad
  with its producer into a slow loop and recomputes the interpolation per tap).
  """
  taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  weights = jnp.exp(-0.5 * (taps / jnp.maximum(sigma, _MIN_BLUR_SIGMA)[:, None]) ** 2)
  weights = weights / jnp.sum(weights, axis=1, keepdims=True)
  weights = jnp.where(sigma[:, None] > 0.0, weights, (taps == 0).astype(jnp.float32))
  for axis in (2, 1):
    length = images.shape[axis] - 2 * radius
    images = sum(jax.lax.slice_in_dim(images, k, k + length, axis=axis)
                 * weights[:, k, None, None, None] for k in range(2 * radius + 1))
  return images


def _has_colour_ops(config: AugmentConfig) -> bool:
  return max(config.brightness, config.contrast, config.saturation, config.grayscale_prob) > 0.0


def _photometric(images, mask, luma_mean, params: _Params, config: AugmentConfig, margin: int):
  """Colour jitter, grayscale, blur on [0, 1] images ``[batch, out + 2 margin, ..., 3 or 4]``.

  Returns the ``[batch, out, out, 3]`` centre with the padding (outside the box) back at zero.
  """
  if _has_colour_ops(config):
    images = _colour_jitter(images, luma_mean, params) * mask
  if margin:
    images = _gaussian_blur(images, params.blur_sigma, margin)
  return images * _centre(mask, margin)


def to_uint8(images) -> np.ndarray:
  """Crops ``[..., 3]`` in [0, 1] -> uint8 numpy ``[..., 3]`` for pictures (rounded, clipped)."""
  return np.clip(np.round(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def _check_inputs(images, boxes, out_size: int):
  if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != jnp.uint8:
    raise ValueError(f"kdpose/augment.py: images must be uint8 [batch, S, S, 3], got "
                     f"{images.dtype} {images.shape}.")
  if boxes.shape != (images.shape[0], 4):
    raise ValueError(f"kdpose/augment.py: boxes must be [batch, 4] = [{images.shape[0]}, 4], "
                     f"got {boxes.shape}.")
  if out_size < 1:
    raise ValueError(f"kdpose/augment.py: out_size={out_size} must be positive.")


@functools.partial(jax.jit, static_argnames=("out_size",))
def crop_images(images: jax.Array, boxes: jax.Array, out_size: int) -> jax.Array:
  """Exact box crop for evaluation and prediction.

  Args:
    images: uint8 ``[batch, S, S, 3]``.
    boxes: float ``[batch, 4]`` = (x1, y1, x2, y2) in pixels.
    out_size: side of the square output, pixels.

  Returns:
    float32 ``[batch, out, out, 3]``, RGB in [0, 1]; the box keeps its aspect ratio, centred,
    with zero (black) padding.
  """
  _check_inputs(images, boxes, out_size)
  batch = images.shape[0]
  crops, _ = _warp(images, boxes.astype(jnp.float32), jnp.zeros(batch, bool),
                   jnp.zeros(batch, jnp.float32), out_size)
  return crops


@functools.partial(jax.jit, static_argnames=("out_size", "config"))
def augment_batch(rng: jax.Array, images: jax.Array, boxes: jax.Array, viewpoints: jax.Array,
                  out_size: int, config: AugmentConfig
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Random training crop and augmentation, with the viewpoint labels updated to match.

  Args:
    rng: a PRNG key; sample ``i`` uses ``jax.random.split(rng, batch)[i]``.
    images: uint8 ``[batch, S, S, 3]``.
    boxes: float ``[batch, 4]`` = (x1, y1, x2, y2) in pixels.
    viewpoints: float ``[batch, 3]`` (azimuth, elevation, in-plane), degrees.
    out_size: side of the square output, pixels.
    config: which ops and how strong.

  Returns:
    images float32 ``[batch, out, out, 3]`` RGB in [0, 1], viewpoints ``[batch, 3]``
    in degrees (flipped, then in-plane rotated, in canonical ranges), and ``flipped [batch]``
    (bool): a mirrored image shows the mirrored object, so its shape must be mirrored too
    (``mirror_points``).
  """
  _check_inputs(images, boxes, out_size)
  keys = jax.random.split(rng, images.shape[0])
  params = jax.vmap(functools.partial(_sample_params, config=config))(
      keys, boxes.astype(jnp.float32))
  margin = _blur_radius(config)
  luma_mean = None
  if _has_colour_ops(config):
    images = _with_luma(images)
    # Contrast pivots on the mean luma of the box in the source: close to that of the crop's
    # valid pixels, and a reduction over the source instead of the interpolated crop.
    luma_mean = _box_mean(images[..., 3], params.boxes) / 255.0
  crops, mask = _warp(images, params.boxes, params.flip, params.angle, out_size, margin)
  crops = _photometric(crops, mask, luma_mean, params, config, margin)
  viewpoints = viewpoints.astype(jnp.float32)
  viewpoints = jnp.where(params.flip[:, None], geometry.flip_viewpoint(viewpoints), viewpoints)
  if config.rotation_mode != "none":
    viewpoints = geometry.rotate_inplane(viewpoints, params.angle)
  return crops, viewpoints, params.flip


def mirror_points(points: jax.Array, flipped: jax.Array) -> jax.Array:
  """Mirrors object-frame points ``[batch, N, 3]`` (x -> -x) where ``flipped [batch]``: the shape
  seen in a horizontally flipped image, whose label is ``geometry.flip_viewpoint``."""
  return jnp.where(flipped[:, None, None], points * jnp.array([-1.0, 1.0, 1.0]), points)
