"""Tests of the on-device crop and augmentation op (kdpose/augment.py)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from kdpose import augment, geometry

OFF = augment.AugmentConfig(
    box_jitter=0.0, flip_prob=0.0, rotation_mode="none", brightness=0.0, contrast=0.0,
    saturation=0.0, grayscale_prob=0.0, blur_prob=0.0)

# An asymmetric object: one pure-colour blob per channel, in object coordinates (z up, front -y).
BLOBS = np.array([[0.9, 0.0, 0.0], [0.0, 0.0, 0.7], [0.35, -0.55, 0.25]])
SCALE = 16.0  # pixels per object unit in the orthographic rendering.
SPLAT_SIGMA = 1.5  # pixels.
MIRROR = np.diag([-1.0, 1.0, 1.0])
# Every op on, with more flips, grayscale and blur than the defaults; shared to compile once.
FULL = augment.AugmentConfig(rotation_mode="normal", grayscale_prob=0.5, blur_prob=0.5)


def _project(points, viewpoint, size):
  """Orthographic projection of ``[n, 3]`` points -> (col, row) ``[n, 2]`` in pixels of a
  ``size`` image centred on the object: u = x_cam, v = y_cam (up), row = centre - v."""
  rot = geometry.viewpoint_to_rotation(*np.asarray(viewpoint, np.float64))
  cam = points @ rot.T
  return np.stack([size / 2 + SCALE * cam[:, 0], size / 2 - SCALE * cam[:, 1]], axis=1)


def _render(points, viewpoint, size):
  """uint8 ``[size, size, 3]``: blob i is a gaussian splat in channel i."""
  centres = np.arange(size) + 0.5
  image = np.zeros((size, size, 3))
  for channel, (col, row) in enumerate(_project(points, viewpoint, size)):
    splat = np.exp(-((centres[None, :] - col) ** 2 + (centres[:, None] - row) ** 2)
                   / (2 * SPLAT_SIGMA**2))
    image[..., channel] = 255.0 * splat
  return np.round(image).astype(np.uint8)


def _centroids(image):
  """(col, row) centroid of each channel of a float ``[h, w, 3]`` image -> ``[3, 2]``."""
  centres = np.arange(image.shape[0]) + 0.5
  weights = image / image.sum(axis=(0, 1))
  return np.stack([np.einsum("hwc,w->c", weights, centres),
                   np.einsum("hwc,h->c", weights, centres)], axis=1)


def test_crop_copies_the_box_pixels_exactly():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (1, 48, 48, 3), dtype=np.uint8)
  out = augment.crop_images(jnp.asarray(image), jnp.array([[5.0, 7.0, 37.0, 39.0]]), 32)
  assert out.shape == (1, 32, 32, 3) and out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out)[0] * 255.0, image[0, 7:39, 5:37], atol=1e-3)
  np.testing.assert_array_equal(augment.to_uint8(out)[0], image[0, 7:39, 5:37])


@pytest.mark.parametrize("out_size", [32, 16])
def test_crop_of_a_2_to_1_box_fills_the_middle_and_pads_with_zeros(out_size):
  colour = np.array([200, 30, 90], np.uint8)
  image = np.zeros((1, 48, 48, 3), np.uint8)
  image[0, 10:26, 4:36] = colour  # 32 wide, 16 high, exactly the box below.
  out = augment.crop_images(jnp.asarray(image), jnp.array([[4.0, 10.0, 36.0, 26.0]]), out_size)
  pixels = augment.to_uint8(out)[0]
  quarter = out_size // 4
  np.testing.assert_array_equal(pixels[quarter:3 * quarter], np.broadcast_to(colour, (
      2 * quarter, out_size, 3)))
  zero = np.zeros(3)  # black padding.
  np.testing.assert_allclose(np.asarray(out)[0, :quarter], np.broadcast_to(zero, (
      quarter, out_size, 3)), atol=1e-6)
  np.testing.assert_allclose(np.asarray(out)[0, 3 * quarter:], np.broadcast_to(zero, (
      quarter, out_size, 3)), atol=1e-6)


def test_crop_interpolates_bilinearly_at_pixel_centres():
  # A horizontal ramp, value 8 * column: upsampling by 2 must give 8 * (x - 0.5) at source x.
  ramp = np.broadcast_to((8 * np.arange(32, dtype=np.uint8))[None, :, None], (32, 32, 3))
  out = augment.crop_images(jnp.asarray(ramp[None]), jnp.array([[8.0, 8.0, 24.0, 24.0]]), 32)
  x = 8.0 + (np.arange(32) + 0.5) / 2.0
  np.testing.assert_allclose(np.asarray(out)[0, 5, :, 1] * 255.0, 8.0 * (x - 0.5), atol=1e-3)


@pytest.mark.parametrize("config", [
    dataclasses.replace(OFF, rotation_mode="uniform", rotation_max_deg=60.0),
    dataclasses.replace(OFF, flip_prob=1.0),
    dataclasses.replace(OFF, flip_prob=0.5, rotation_mode="normal"),
], ids=["rotate", "flip", "flip_and_rotate"])
def test_augmented_image_is_the_rendering_at_the_returned_label(config):
  """Rotating by r must show the object at in-plane t + r; flipping must show the mirrored object
  at flip_viewpoint(vp). Checked on the centroids of three coloured blobs."""
  batch, size, out_size = 8, 64, 48
  viewpoint = np.array([40.0, 20.0, 10.0])
  image = _render(BLOBS, viewpoint, size)
  images = jnp.asarray(np.broadcast_to(image, (batch, size, size, 3)))
  boxes = jnp.asarray(np.tile([8.0, 8.0, 56.0, 56.0], (batch, 1)), jnp.float32)  # scale 1.
  viewpoints = jnp.asarray(np.tile(viewpoint, (batch, 1)), jnp.float32)
  out, labels, _ = augment.augment_batch(jax.random.key(3), images, boxes, viewpoints, out_size,
                                      config)
  out, labels = np.asarray(out), np.asarray(labels, np.float64)
  flipped = labels[:, 0] != viewpoint[0]
  angles = geometry.wrap_degrees(labels[:, 2] - np.where(flipped, -viewpoint[2], viewpoint[2]))
  if config.rotation_mode != "none":
    assert np.sum(np.abs(angles) > 10.0) >= 3  # the check below must be able to see the sign.
  if config.flip_prob == 0.5:
    assert 0 < np.sum(flipped) < batch
  for i in range(batch):
    points = BLOBS @ MIRROR.T if flipped[i] else BLOBS
    found = _centroids(out[i])
    expected = _project(points, labels[i], out_size)
    np.testing.assert_allclose(found, expected, atol=0.5, err_msg=f"sample {i}")
    if abs(angles[i]) > 10.0:  # the opposite rotation sign is far off.
      wrong = labels[i] - np.array([0.0, 0.0, 2.0 * angles[i]])
      assert np.max(np.abs(found - _project(points, wrong, out_size))) > 2.0
    if flipped[i]:  # the unmirrored object at the flipped label is far off.
      assert np.max(np.abs(found - _project(BLOBS, labels[i], out_size))) > 2.0


def _random_batch(batch=16, size=40, seed=0):
  rng = np.random.default_rng(seed)
  images = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
  corner = rng.uniform(2.0, 12.0, (batch, 2))
  extent = rng.uniform(10.0, 26.0, (batch, 2))
  boxes = jnp.asarray(np.concatenate([corner, corner + extent], 1), jnp.float32)
  viewpoints = np.stack([rng.uniform(0, 360, batch), rng.uniform(-90, 90, batch),
                         rng.uniform(-180, 180, batch)], 1)
  viewpoints[:4] = [[0.0, 90.0, -180.0], [359.99, -90.0, 179.99], [180.0, 0.0, 0.0],
                    [0.0, 0.0, -180.0]]
  return images, boxes, jnp.asarray(viewpoints, jnp.float32)


def test_augment_with_everything_off_is_the_exact_crop():
  images, boxes, viewpoints = _random_batch()
  out, labels, _ = augment.augment_batch(jax.random.key(0), images, boxes, viewpoints, 24, OFF)
  np.testing.assert_array_equal(out, augment.crop_images(images, boxes, 24))
  np.testing.assert_array_equal(labels, viewpoints)


def test_same_rng_same_output_and_another_rng_another_output():
  images, boxes, viewpoints = _random_batch()
  first = augment.augment_batch(jax.random.key(7), images, boxes, viewpoints, 24, FULL)
  again = augment.augment_batch(jax.random.key(7), images, boxes, viewpoints, 24, FULL)
  other = augment.augment_batch(jax.random.key(8), images, boxes, viewpoints, 24, FULL)
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a, b)
  assert not np.allclose(first[0], other[0])


def test_sharded_batch_gives_the_same_result_as_one_device():
  assert len(jax.devices()) == 8, "tests/conftest.py should provide 8 CPU devices"
  images, boxes, viewpoints = _random_batch(batch=16)
  rng = jax.random.key(11)
  one = jax.devices()[0]
  single = augment.augment_batch(rng, *(jax.device_put(a, one) for a in (images, boxes,
                                                                          viewpoints)), 24, FULL)
  data = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
  sharded = augment.augment_batch(rng, *(jax.device_put(a, data) for a in (images, boxes,
                                                                           viewpoints)), 24, FULL)
  assert sharded[0].sharding.is_equivalent_to(data, 4)
  # The same draws for every record; the two programs may round a last bit differently (at
  # XLA:CPU's -O0 they do: up to 2.4e-7), while a draw that depended on the device would move
  # pixels and angles by far more.
  for a, b in zip(single, sharded, strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_output_shape_dtype_and_canonical_labels():
  images, boxes, viewpoints = _random_batch(batch=16)
  out, labels, _ = augment.augment_batch(jax.random.key(1), images, boxes, viewpoints, 24, FULL)
  assert out.shape == (16, 24, 24, 3) and out.dtype == jnp.float32
  assert labels.shape == (16, 3) and labels.dtype == jnp.float32
  labels = np.asarray(labels)
  assert np.all((labels[:, 0] >= 0) & (labels[:, 0] < 360))
  np.testing.assert_array_equal(labels[:, 1], viewpoints[:, 1])
  assert np.all((labels[:, 2] >= -180) & (labels[:, 2] < 180))
  assert np.all((np.asarray(out) >= -1e-5) & (np.asarray(out) <= 1 + 1e-5))


def test_grayscale_gives_equal_channels_and_padding_stays_black():
  images, _, viewpoints = _random_batch(batch=8)
  boxes = jnp.asarray(np.tile([4.0, 12.0, 36.0, 28.0], (8, 1)), jnp.float32)  # 2:1.
  config = dataclasses.replace(augment.AugmentConfig(), box_jitter=0.0, rotation_mode="none",
                               grayscale_prob=1.0, blur_prob=1.0)
  out, _, _ = augment.augment_batch(jax.random.key(2), images, boxes, viewpoints, 32, config)
  unit = np.asarray(out)
  np.testing.assert_allclose(unit[..., 0], unit[..., 1], atol=1e-5)
  np.testing.assert_allclose(unit[..., 0], unit[..., 2], atol=1e-5)
  np.testing.assert_allclose(unit[:, :8], 0.0, atol=1e-6)
  np.testing.assert_allclose(unit[:, 24:], 0.0, atol=1e-6)
  assert np.all(unit[:, 8:24].std(axis=(1, 2, 3)) > 0.01)  # the object is still there.


def test_colour_jitter_equals_torchvision_blends_in_sequence():
  rng = np.random.default_rng(4)
  rgb = rng.uniform(0.3, 0.7, (2, 5, 5, 3)).astype(np.float32)
  luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
  b, c, s, gray = np.array([1.2, 0.9]), np.array([0.8, 1.1]), np.array([1.3, 0.7]), [False, True]
  mean = luma.mean(axis=(1, 2))
  params = augment._Params(  # only the colour fields are read.
      boxes=None, flip=None, angle=None, brightness=jnp.asarray(b, jnp.float32),
      contrast=jnp.asarray(c, jnp.float32), saturation=jnp.asarray(s, jnp.float32),
      grayscale=jnp.asarray(gray), blur_sigma=None)
  found = augment._colour_jitter(jnp.asarray(np.concatenate([rgb, luma[..., None]], -1)),
                                 jnp.asarray(mean, jnp.float32), params)
  e = lambda v: np.asarray(v)[:, None, None, None]
  gray_of = lambda x: (x @ np.array([0.299, 0.587, 0.114]))[..., None]
  expect = rgb * e(b)  # brightness
  expect = expect * e(c) + e((1 - c) * b * mean)  # contrast: the brightened image's mean luma.
  expect = expect * e(s) + gray_of(expect) * e(1 - s)  # saturation
  expect[1] = np.broadcast_to(gray_of(expect[1]), expect[1].shape)  # grayscale
  assert np.all((expect > 0) & (expect < 1))  # no clipping in this case.
  np.testing.assert_allclose(found, expect, atol=1e-5)


def test_blur_spreads_an_impulse_symmetrically_and_keeps_its_mass():
  image = np.zeros((4, 32, 32, 3), np.uint8)
  image[:, 16, 16] = 255
  boxes = jnp.asarray(np.tile([0.0, 0.0, 32.0, 32.0], (4, 1)), jnp.float32)
  config = dataclasses.replace(OFF, blur_prob=1.0, blur_sigma_max=1.0)
  out, _, _ = augment.augment_batch(jax.random.key(5), jnp.asarray(image), boxes,
                                 jnp.zeros((4, 3)), 32, config)
  blurred = np.asarray(out)[..., 0]
  patch = blurred[:, 14:19, 14:19]  # radius-2 kernel around the impulse.
  np.testing.assert_allclose(blurred.sum(axis=(1, 2)), 1.0, atol=1e-4)
  np.testing.assert_allclose(patch.sum(axis=(1, 2)), 1.0, atol=1e-4)
  assert np.any(patch[:, 2, 2] < 0.9)  # some sample is clearly blurred.
  np.testing.assert_allclose(patch, patch[:, ::-1, ::-1], atol=1e-6)
  np.testing.assert_allclose(patch, np.swapaxes(patch, 1, 2), atol=1e-6)
  # A gaussian: the 2-pixel tap is the 1-pixel tap to the 4th power (relative to the centre),
  # with sigma = sqrt(-1 / (2 log(tap1))) within the configured [0.1, 1.0].
  tap1, tap2 = patch[:, 2, 3] / patch[:, 2, 2], patch[:, 2, 4] / patch[:, 2, 2]
  np.testing.assert_allclose(tap2, tap1**4, atol=1e-5)
  assert np.all(tap1 <= np.exp(-0.5) + 1e-5)
  separable = patch[:, :, 2:3] * patch[:, 2:3, :] / patch[:, 2:3, 2:3]
  np.testing.assert_allclose(patch, separable, atol=1e-5)


def test_box_jitter_moves_the_crop_but_keeps_the_object_centre():
  colour = np.array([10, 220, 40], np.uint8)
  image = np.zeros((8, 48, 48, 3), np.uint8)
  image[:, 8:40, 8:40] = colour
  boxes = jnp.asarray(np.tile([8.0, 8.0, 40.0, 40.0], (8, 1)), jnp.float32)
  config = dataclasses.replace(OFF, box_jitter=0.1)
  out, _, _ = augment.augment_batch(jax.random.key(6), jnp.asarray(image), boxes,
                                 jnp.zeros((8, 3)), 32, config)
  pixels = augment.to_uint8(out)
  np.testing.assert_array_equal(pixels[:, 12:20, 12:20], np.broadcast_to(colour, (8, 8, 8, 3)))
  exact = augment.to_uint8(augment.crop_images(jnp.asarray(image), boxes, 32))
  assert all(not np.array_equal(pixels[i], exact[i]) for i in range(8))


def test_config_from_mapping_and_its_errors():
  config = augment.AugmentConfig.from_mapping({"flip_prob": 0.0, "rotation_mode": "normal"})
  assert config == dataclasses.replace(augment.AugmentConfig(), flip_prob=0.0,
                                       rotation_mode="normal")
  assert hash(config) == hash(dataclasses.replace(config))
  with pytest.raises(ValueError, match="unknown keys \\['hue'\\]"):
    augment.AugmentConfig.from_mapping({"hue": 0.1})
  with pytest.raises(ValueError, match="rotation_mode"):
    augment.AugmentConfig(rotation_mode="sideways")
  with pytest.raises(ValueError, match="flip_prob"):
    augment.AugmentConfig(flip_prob=1.5)
  with pytest.raises(ValueError, match="box_jitter"):
    augment.AugmentConfig(box_jitter=0.6)


def test_bad_inputs_fail_loudly():
  with pytest.raises(ValueError, match="uint8"):
    augment.crop_images(jnp.zeros((2, 8, 8, 3), jnp.float32), jnp.zeros((2, 4)), 8)
  with pytest.raises(ValueError, match="boxes"):
    augment.crop_images(jnp.zeros((2, 8, 8, 3), jnp.uint8), jnp.zeros((3, 4)), 8)


def test_flipped_samples_are_reported_and_their_points_mirrored():
  images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  boxes = jnp.tile(jnp.array([2.0, 2.0, 14.0, 14.0]), (4, 1))
  views = jnp.tile(jnp.array([30.0, 10.0, 5.0]), (4, 1))
  always = augment.AugmentConfig(box_jitter=0.0, flip_prob=1.0, rotation_mode="none")
  _, labels, flipped = augment.augment_batch(jax.random.key(0), images, boxes, views, 8, always)
  assert np.all(np.asarray(flipped))
  np.testing.assert_allclose(labels, np.tile([330.0, 10.0, -5.0], (4, 1)), atol=1e-4)
  points = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5, 3)), jnp.float32)
  mirrored = augment.mirror_points(points, jnp.array([True, False, True, False]))
  np.testing.assert_allclose(mirrored[0], points[0] * np.array([-1, 1, 1]))
  np.testing.assert_allclose(mirrored[1], points[1])
