"""Tests of kdpose.models: shapes, dtypes, sizes, invariances and pose decoding."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdpose import geometry, models
from kdpose.models.heads import decode_pose
from kdpose.models.pointnet import PointNet

BATCH = 4


def _inputs(image_size: int = 32, num_points: int = 50):
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(BATCH, image_size, image_size, 3)), jnp.float32)
  points = jnp.asarray(rng.normal(size=(BATCH, num_points, 3)), jnp.float32)
  return images, points


def _check_pose(pose, batch: int = BATCH):
  assert [x.shape for x in pose["logits"]] == [(batch, 24), (batch, 12), (batch, 24)]
  assert [x.shape for x in pose["offsets"]] == [(batch, 24), (batch, 12), (batch, 24)]
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(pose))


def _param_count(params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_teacher_shapes_dtypes_and_batch_stats(dtype):
  config = models.teacher_config("tiny")
  config.dtype = dtype
  teacher = models.build_teacher(config)
  images, points = _inputs()
  variables = teacher.init(jax.random.key(0), images, points, train=False)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out, updates = teacher.apply(variables, images, points, train=True, mutable=["batch_stats"])
  assert out["embedding"].shape == out["image_embedding"].shape == (BATCH, 32)
  assert out["embedding"].dtype == out["image_embedding"].dtype == jnp.float32
  assert float(jnp.max(jnp.abs(out["embedding"]))) <= 1.0  # tanh
  _check_pose(out["pose"])
  # Train mode moves the running statistics; eval mode must not need a mutable collection.
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                       updates["batch_stats"])
  assert any(jax.tree.leaves(moved))
  eval_out = teacher.apply(variables, images, points, train=False)
  assert eval_out["embedding"].shape == (BATCH, 32)


def test_tiny_student_from_config_alone_with_list_widths():
  config = dict(models.student_config("tiny"))
  config["mlp_widths"] = [32]  # as a JSON-exported config would hand it over
  student = models.build_student(config)
  images, _ = _inputs()
  variables = student.init(jax.random.key(1), images, train=False)
  assert set(variables["params"]) == {"image_encoder", "mlp", "projector", "pose_heads"}
  out = student.apply(variables, images, train=False)
  assert out["embedding"].shape == out["feature"].shape == (BATCH, 32)
  assert out["embedding"].dtype == out["feature"].dtype == jnp.float32
  _check_pose(out["pose"])
  # Same input, same variables: deterministic at eval time.
  again = student.apply(variables, images, train=False)
  np.testing.assert_array_equal(out["embedding"], again["embedding"])


@pytest.mark.parametrize("name, params, width", [("resnet18", 11_176_512, 512),
                                                 ("resnet50", 23_508_032, 2048)])
def test_resnet_trunk_sizes_match_torchvision(name, params, width):
  encoder = models.get_image_encoder(name)(dtype=jnp.bfloat16)
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: encoder.init(jax.random.key(0), x, train=False), images)
  assert _param_count(variables["params"]) == params  # torchvision without the classifier
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  out = jax.eval_shape(lambda v, x: encoder.apply(v, x, train=False), variables, images)
  assert (out.shape, out.dtype) == ((2, width), jnp.float32)


@pytest.mark.parametrize("size", ["resnet18", "resnet50"])
def test_anchor_teacher_and_student_shapes(size):
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  points = jax.ShapeDtypeStruct((2, 2500, 3), jnp.float32)
  teacher = models.build_teacher(models.teacher_config(size))
  variables = jax.eval_shape(
      lambda x, p: teacher.init(jax.random.key(0), x, p, train=False), images, points)
  assert variables["params"]["point_encoder"]["Dense_2"]["kernel"].shape == (128, 1024)
  assert variables["params"]["projector"]["Dense_0"]["kernel"].shape == (1024, 800)
  out = jax.eval_shape(lambda v, x, p: teacher.apply(v, x, p, train=False), variables, images,
                       points)
  assert out["embedding"].shape == out["image_embedding"].shape == (2, 200)
  _check_pose(out["pose"], batch=2)
  student = models.build_student(models.student_config(size))
  variables = jax.eval_shape(lambda x: student.init(jax.random.key(0), x, train=False), images)
  out = jax.eval_shape(lambda v, x: student.apply(v, x, train=False), variables, images)
  assert out["embedding"].shape == out["feature"].shape == (2, 200)
  _check_pose(out["pose"], batch=2)


@pytest.mark.parametrize("train", [False, True])
def test_pointnet_is_permutation_invariant(train):
  net = PointNet(widths=(8, 16, 32))
  _, points = _inputs(num_points=64)
  variables = net.init(jax.random.key(2), points, train=False)
  perm = np.stack([np.random.default_rng(i).permutation(64) for i in range(BATCH)])
  shuffled = jnp.take_along_axis(points, jnp.asarray(perm)[..., None], axis=1)
  if train:
    apply = lambda x: net.apply(variables, x, train=True, mutable=["batch_stats"])
  else:
    apply = lambda x: (net.apply(variables, x, train=False), {})
  out, stats = apply(points)
  out_shuffled, stats_shuffled = apply(shuffled)
  assert out.shape == (BATCH, 32)
  np.testing.assert_allclose(out, out_shuffled, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), stats, stats_shuffled)
  # Moving the points must change the feature (so the equality above is not vacuous).
  moved, _ = apply(points + jnp.asarray(np.random.default_rng(9).normal(size=points.shape)))
  assert float(jnp.max(jnp.abs(out - moved))) > 1e-2


def _one_hot_pose(bins: np.ndarray, raw: np.ndarray, peak: float = 5.0):
  """A pose pytree with logit ``peak`` at ``bins [batch, 3]`` and raw offsets ``[batch, 3]``."""
  logits, offsets = [], []
  for k, count in enumerate(geometry.num_bins()):
    logit = np.zeros((bins.shape[0], count), np.float32)
    logit[np.arange(bins.shape[0]), bins[:, k]] = peak
    offset = np.full((bins.shape[0], count), 9.0, np.float32)  # off-argmax values must not leak
    offset[np.arange(bins.shape[0]), bins[:, k]] = raw[:, k]
    logits.append(jnp.asarray(logit))
    offsets.append(jnp.asarray(offset))
  return {"logits": tuple(logits), "offsets": tuple(offsets)}


def test_decode_hand_built_pose():
  # azimuth bin 3 with offset 0 -> 3.5 * 15 = 52.5; elevation bin 0 with tanh(r)/2 = 0.25 ->
  # 0.75 * 15 - 90 = -78.75; in-plane bin 23 with tanh(r)/2 = -0.4 -> 23.1 * 15 - 180 = 166.5.
  bins = np.array([[3, 0, 23]])
  raw = np.array([[0.0, np.arctanh(0.5), np.arctanh(-0.8)]])
  viewpoint, confidence = decode_pose(_one_hot_pose(bins, raw))
  np.testing.assert_allclose(viewpoint, [[52.5, -78.75, 166.5]], atol=1e-4)
  # softmax of a one-hot logit 5 over n bins: e^5 / (e^5 + n - 1).
  expected = [np.exp(5) / (np.exp(5) + n - 1) for n in (24, 12, 24)]
  np.testing.assert_allclose(confidence, [expected], rtol=1e-5)


def test_encode_decode_round_trip():
  rng = np.random.default_rng(3)
  viewpoint = np.stack([rng.uniform(0, 360, 64), rng.uniform(-89, 89, 64),
                        rng.uniform(-180, 179, 64)], -1).astype(np.float32)
  bins, offsets = geometry.encode_viewpoint(viewpoint)
  raw = np.arctanh(np.clip(2 * offsets, -0.9999, 0.9999))
  decoded, _ = decode_pose(_one_hot_pose(bins, raw))
  np.testing.assert_allclose(geometry.rotation_error(np.asarray(decoded), viewpoint), 0,
                             atol=0.01)


def test_decode_rejects_wrong_bin_count():
  pose = _one_hot_pose(np.zeros((1, 3), int), np.zeros((1, 3)))
  with pytest.raises(ValueError, match="bin_size=30"):
    decode_pose(pose, bin_size=30.0)


def test_registry_errors_name_the_problem():
  with pytest.raises(KeyError, match="resnet18"):
    models.get_image_encoder("vgg16")
  with pytest.raises(KeyError, match="tiny"):
    models.teacher_config("huge")
  config = dict(models.teacher_config("tiny"))
  del config["point_widths"]
  config["dropout"] = 0.3
  with pytest.raises(ValueError, match=r"missing fields \['point_widths'\].*unknown.*dropout"):
    models.build_teacher(config)
  config = models.student_config("tiny")
  config.dtype = "float16"
  with pytest.raises(ValueError, match="float16"):
    models.build_student(config)
