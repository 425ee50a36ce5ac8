"""Tests of kdpose.losses: hand-computed values, limits, gradients and 1-vs-8-device equality."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from kdpose import geometry, losses

COUNTS = (24, 12, 24)


def _pose(logits, offsets):
  return {"logits": tuple(jnp.asarray(x, jnp.float32) for x in logits),
          "offsets": tuple(jnp.asarray(x, jnp.float32) for x in offsets)}


def test_pose_loss_by_hand():
  # Sample 0: (50, 10, -20) -> bins (3, 6, 10), offsets (5/15 - .5, 10/15 - .5, 10/15 - .5).
  # Sample 1: (359, -90, 170) -> bins (23, 0, 23), offsets (14/15 - .5, -.5, 5/15 - .5).
  viewpoint = np.array([[50.0, 10.0, -20.0], [359.0, -90.0, 170.0]])
  gt_bins = np.array([[3, 6, 10], [23, 0, 23]])
  gt_offsets = np.array([[-1 / 6, 1 / 6, 1 / 6], [13 / 30, -0.5, -1 / 6]])
  logits = [np.zeros((2, n)) for n in COUNTS]
  logits[2][0, 10] = 2.0  # in-plane of sample 0 gets a confident right answer
  logits[0][1, 5] = 3.0  # azimuth of sample 1 a confident wrong one
  raw = [np.zeros((2, n)) for n in COUNTS]
  raw[1][0, 6] = np.arctanh(0.8)  # predicted elevation offset 0.4 for sample 0
  loss, parts = losses.pose_loss(_pose(logits, raw), viewpoint)

  ce = np.array([
      [np.log(24), np.log(12), np.log(np.exp(2) + 23) - 2],
      [np.log(np.exp(3) + 23), np.log(12), np.log(24)],
  ])
  predicted = np.array([[0.0, 0.4, 0.0], [0.0, 0.0, 0.0]])
  diff = 5 * (predicted - gt_offsets)  # only sample 0 elevation (5 * 0.2333) is past beta = 1
  huber = np.where(np.abs(diff) < 1, 0.5 * diff**2, np.abs(diff) - 0.5)
  bins, offsets = geometry.encode_viewpoint(viewpoint)  # the hand targets follow the convention
  np.testing.assert_array_equal(bins, gt_bins)
  np.testing.assert_allclose(offsets, gt_offsets, atol=1e-12)
  np.testing.assert_allclose(parts["pose_cls"], ce.sum(1).mean(), rtol=1e-6)
  np.testing.assert_allclose(parts["pose_reg"], huber.sum(1).mean(), rtol=1e-6)
  np.testing.assert_allclose(loss, ce.sum(1).mean() + huber.sum(1).mean(), rtol=1e-6)


@pytest.mark.parametrize("symmetry", [None, (0, 1, 2, 1)])
def test_pose_loss_gradient_equals_central_finite_differences(symmetry):
  # The loss computes in float32: steps of 1e-2, tolerances above float32 rounding.
  rng = np.random.default_rng(7)
  viewpoint = np.array([[50.0, 10.0, -20.0], [200.0, -40.0, 170.0], [5.0, 80.0, 3.0],
                        [359.0, 0.0, -179.0]])
  pose = {"logits": tuple(jnp.asarray(rng.normal(size=(4, n)), jnp.float32) for n in COUNTS),
          "offsets": tuple(jnp.asarray(rng.normal(size=(4, n)), jnp.float32) for n in COUNTS)}
  codes = None if symmetry is None else jnp.asarray(symmetry)

  flat, unravel = jax.flatten_util.ravel_pytree(pose)

  @jax.jit
  def loss(p):
    return losses.pose_loss(p, viewpoint, symmetry=codes)[0]

  @jax.jit
  def loss_at(vector):
    return loss(unravel(vector))

  grads = jax.grad(loss)(pose)
  analytic = np.asarray(jax.flatten_util.ravel_pytree(grads)[0])
  # Every coordinate the loss touches (the offsets of other bins have zero gradient).
  touched = np.flatnonzero(np.abs(analytic) > 0)
  assert touched.size > 100
  eps, picked = 1e-2, touched[::7]
  numeric = [(loss_at(flat.at[i].add(eps)) - loss_at(flat.at[i].add(-eps))) / (2 * eps)
             for i in picked]
  np.testing.assert_allclose(numeric, analytic[picked], rtol=2e-2, atol=2e-4)


def test_two_fold_pose_loss_takes_the_nearer_azimuth_label():
  # Azimuth 50 is bin 3 and azimuth 230 bin 15, both with offset 5/15 - 0.5 = -1/6; elevation 10
  # and in-plane -20 as in test_pose_loss_by_hand. Sample 0 (two-fold) is confident on the
  # turned label, sample 1 (two-fold) on its own, sample 2 (none) on the turned one.
  viewpoint = np.tile([50.0, 10.0, -20.0], (3, 1))
  symmetry = np.array([geometry.SYMMETRY_TWO_FOLD, geometry.SYMMETRY_TWO_FOLD,
                       geometry.SYMMETRY_NONE])
  logits = [np.zeros((3, n)) for n in COUNTS]
  logits[0][[0, 1, 2], [15, 3, 15]] = 3.0
  pose = _pose(logits, [np.zeros((3, n)) for n in COUNTS])
  loss, parts = losses.pose_loss(pose, viewpoint, symmetry=symmetry)
  confident = np.log(np.exp(3) + 23)
  azimuth_ce = np.array([confident - 3, confident - 3, confident])  # the nearer labels' CE
  other_ce = np.log(12) + np.log(24)
  huber = 3 * 0.5 * (5 / 6) ** 2  # every angle's offset target is +-1/6, every prediction 0
  np.testing.assert_allclose(parts["pose_cls"], np.mean(azimuth_ce + other_ce), rtol=1e-6)
  np.testing.assert_allclose(parts["pose_reg"], huber, rtol=1e-5)
  np.testing.assert_allclose(loss, np.mean(azimuth_ce + other_ce) + huber, rtol=1e-6)
  # The same as the plain loss against the nearer labels, and less than against the given ones.
  nearer = viewpoint + [[180.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
  np.testing.assert_allclose(loss, losses.pose_loss(pose, nearer)[0], rtol=1e-6)
  assert float(loss) < float(losses.pose_loss(pose, viewpoint)[0]) - 0.9


def test_continuous_samples_have_no_azimuth_term_or_gradient():
  rng = np.random.default_rng(4)
  viewpoint = np.stack([rng.uniform(0, 360, 3), rng.uniform(-90, 90, 3),
                        rng.uniform(-180, 180, 3)], -1)
  pose = _pose([rng.normal(size=(3, n)) for n in COUNTS], [rng.normal(size=(3, n)) for n in COUNTS])
  symmetry = jnp.array([geometry.SYMMETRY_CONTINUOUS, geometry.SYMMETRY_NONE,
                        geometry.SYMMETRY_TWO_FOLD])
  loss_fn = lambda p, s: losses.pose_loss(p, viewpoint, symmetry=s)[0]
  loss, grads = jax.value_and_grad(loss_fn)(pose, symmetry)
  # Sample 0's azimuth terms by hand; the batch mean still divides by 3.
  bins, targets = geometry.encode_viewpoint(viewpoint)
  az_logits, az_raw = np.asarray(pose["logits"][0][0]), np.asarray(pose["offsets"][0][0])
  az_ce = np.log(np.sum(np.exp(az_logits))) - az_logits[bins[0, 0]]
  diff = 5 * (np.tanh(az_raw[bins[0, 0]]) / 2 - targets[0, 0])
  az_huber = 0.5 * diff**2 if abs(diff) < 1 else abs(diff) - 0.5
  plain = loss_fn(pose, symmetry.at[0].set(geometry.SYMMETRY_NONE))
  np.testing.assert_allclose(loss, plain - (az_ce + az_huber) / 3, rtol=1e-5)
  for head in ("logits", "offsets"):
    np.testing.assert_array_equal(grads[head][0][0], 0.0)  # azimuth head, sample 0
    assert np.abs(grads[head][0][1]).max() > 0 and np.abs(grads[head][1][0]).max() > 0


def test_pose_loss_without_symmetry_is_the_asymmetric_one():
  rng = np.random.default_rng(5)
  viewpoint = np.stack([rng.uniform(0, 360, 4), rng.uniform(-90, 90, 4),
                        rng.uniform(-180, 180, 4)], -1)
  pose = _pose([rng.normal(size=(4, n)) for n in COUNTS], [rng.normal(size=(4, n)) for n in COUNTS])
  plain = losses.pose_loss(pose, viewpoint)
  none = losses.pose_loss(pose, viewpoint, symmetry=np.zeros(4, np.int32))
  jax.tree.map(np.testing.assert_array_equal, plain, none)
  with pytest.raises(ValueError, match="symmetry must be"):
    losses.pose_loss(pose, viewpoint, symmetry=np.zeros(3, np.int32))


def test_info_nce_by_hand():
  query = np.array([[1.0, 0.0], [0.0, 2.0]])  # normalised: e1, e2
  keys = np.array([[3.0, 0.0], [1.0, 1.0]])  # normalised: e1, (e1 + e2) / sqrt(2)
  c = np.sqrt(0.5) / 0.5  # cos 45 degrees at temperature 0.5
  # Row 0: positive 1/0.5 = 2, negative c. Row 1: positive c, negative 0.
  plain = [-2 + np.log(np.exp(2) + np.exp(c)), -c + np.log(1 + np.exp(c))]
  np.testing.assert_allclose(losses.info_nce(query, keys, 0.5), np.mean(plain), rtol=1e-6)
  weights = np.array([[7.0, 0.5], [0.25, 7.0]])  # the diagonal 7 must be ignored
  weighted = [-2 + np.log(np.exp(2) + 0.5 * np.exp(c)), -c + np.log(0.25 + np.exp(c))]
  np.testing.assert_allclose(losses.info_nce(query, keys, 0.5, negative_weights=weights),
                             np.mean(weighted), rtol=1e-6)
  # Keys as queries: key 0 has positive 2 and negative 0, key 1 positive c and negative c.
  backward = [-2 + np.log(np.exp(2) + 1), np.log(2)]
  np.testing.assert_allclose(losses.info_nce(query, keys, 0.5, symmetric=True),
                             0.5 * (np.mean(plain) + np.mean(backward)), rtol=1e-6)
  # Both: key j as the query weighs query i's negative by w_ij (the transposed weights), so key
  # 0 sees query 1 at w_10 = 0.25 and key 1 sees query 0 at w_01 = 0.5.
  backward_weighted = [-2 + np.log(np.exp(2) + 0.25), -c + np.log(np.exp(c) + 0.5 * np.exp(c))]
  np.testing.assert_allclose(
      losses.info_nce(query, keys, 0.5, negative_weights=weights, symmetric=True),
      0.5 * (np.mean(weighted) + np.mean(backward_weighted)), rtol=1e-6)


def test_info_nce_vanishes_for_separated_embeddings_as_temperature_falls():
  emb = 3.0 * np.eye(4)
  values = [float(losses.info_nce(emb, emb, t)) for t in (1.0, 0.1, 0.01)]
  np.testing.assert_allclose(values, [np.log1p(3 * np.exp(-1 / t)) for t in (1.0, 0.1, 0.01)],
                             rtol=1e-5, atol=1e-6)  # float32 log(1 + x) near x = 1e-4
  assert values[0] > values[1] > values[2] >= 0 and values[2] < 1e-30


def test_info_nce_is_stable_at_low_temperature():
  rng = np.random.default_rng(0)
  query, keys = rng.normal(size=(2, 8, 16))
  q = query / np.linalg.norm(query, axis=1, keepdims=True)
  k = keys / np.linalg.norm(keys, axis=1, keepdims=True)
  logits = q @ k.T / 0.01  # float64 reference
  top = logits.max(1, keepdims=True)
  reference = np.mean(top[:, 0] + np.log(np.exp(logits - top).sum(1)) - np.diag(logits))
  np.testing.assert_allclose(losses.info_nce(query, keys, 0.01), reference, rtol=1e-5)
  # Zero-weight negatives far above a poor positive: must stay finite, with finite gradients.
  weights = np.zeros((8, 8))
  value, grad = jax.value_and_grad(
      lambda x: losses.info_nce(x, keys, 0.01, negative_weights=weights))(jnp.asarray(query))
  np.testing.assert_allclose(value, 0.0, atol=1e-5)  # only the positive is left in each row
  assert np.all(np.isfinite(grad))


def test_pose_aware_weights():
  viewpoint = np.array([[30.0, 10.0, 5.0], [30.0, 10.0, 5.0], [210.0, 10.0, 5.0],
                        [0.0, 0.0, 0.0], [90.0, 0.0, 0.0], [180.0, 0.0, 0.0]])
  weights = np.asarray(losses.pose_aware_weights(viewpoint))
  assert weights.shape == (6, 6)
  np.testing.assert_allclose(np.diag(weights), 0, atol=1e-4)
  np.testing.assert_allclose(weights[0, 1], 0, atol=1e-4)  # equal poses weigh 0
  # Azimuth 0 vs 180 at e=0, t=0: a half turn about the object's z axis; 0 vs 90: a quarter.
  np.testing.assert_allclose([weights[3, 5], weights[3, 4]], [1.0, 0.5], atol=1e-4)
  np.testing.assert_allclose(weights, weights.T, atol=1e-5)
  assert 0.0 < weights[0, 2] <= 1.0


def test_contrastive_kd_sends_no_gradient_to_the_teacher():
  rng = np.random.default_rng(1)
  student, teacher = (jnp.asarray(x, jnp.float32) for x in rng.normal(size=(2, 6, 8)))
  weights = losses.pose_aware_weights(jnp.asarray(rng.uniform(0, 90, size=(6, 3)), jnp.float32))
  fn = lambda s, t: losses.contrastive_kd(s, t, 0.1, pose_weights=weights, symmetric=True)
  grad_student, grad_teacher = jax.grad(fn, argnums=(0, 1))(student, teacher)
  assert np.all(np.isfinite(grad_student)) and float(jnp.max(jnp.abs(grad_student))) > 0
  np.testing.assert_array_equal(grad_teacher, 0.0)


def test_logit_kd():
  rng = np.random.default_rng(2)
  pose = _pose([rng.normal(size=(3, n)) for n in COUNTS], [np.zeros((3, n)) for n in COUNTS])
  np.testing.assert_allclose(losses.logit_kd(pose, pose, 2.0), 0.0, atol=1e-6)
  # One head differs on one sample, at T = 2: KL of softmax([0, 2] / 2) from softmax([0, 0]).
  student = _pose([np.zeros((1, n)) for n in COUNTS], [np.zeros((1, n)) for n in COUNTS])
  teacher_logits = [np.zeros((1, n)) for n in COUNTS]
  teacher_logits[1][0, 0] = 2.0
  teacher = _pose(teacher_logits, [np.zeros((1, n)) for n in COUNTS])
  p = np.full(12, 1.0)
  p[0] = np.e
  p /= p.sum()
  expected = 4.0 * np.sum(p * np.log(p * 12))
  np.testing.assert_allclose(losses.logit_kd(student, teacher, 2.0), expected, rtol=1e-5)
  assert float(losses.logit_kd(student, teacher, 2.0)) > 0


def test_feature_kd():
  teacher = np.array([[0.0, 1.0], [2.0, 2.0]])
  student = np.array([[0.0, 0.0], [2.0, 2.0]])
  np.testing.assert_allclose(losses.feature_kd(teacher, teacher, 1.0), 0.0, atol=1e-7)
  p = np.array([1.0, np.e]) / (1.0 + np.e)  # teacher row 0; the student row is uniform
  expected = np.sum(p * np.log(p / 0.5)) / 2  # row 1 agrees, so half of row 0's KL
  np.testing.assert_allclose(losses.feature_kd(student, teacher, 1.0), expected, rtol=1e-5)
  with pytest.raises(ValueError, match="shapes differ"):
    losses.feature_kd(student, teacher[:, :1], 1.0)


def _all_losses(batch):
  pose_value, _ = losses.pose_loss(batch["student_pose"], batch["viewpoint"])
  weights = losses.pose_aware_weights(batch["viewpoint"])
  return {
      "pose": pose_value,
      "ckd": losses.contrastive_kd(batch["student"], batch["teacher"], 0.1, pose_weights=weights,
                                   symmetric=True),
      "logit": losses.logit_kd(batch["student_pose"], batch["teacher_pose"], 2.0),
      "feature": losses.feature_kd(batch["student"], batch["teacher"], 1.0),
  }


def test_losses_on_8_way_sharded_batch_equal_1_device():
  assert jax.device_count() == 8, "tests/conftest.py should give 8 fake CPU devices"
  rng = np.random.default_rng(3)
  size = 16
  batch = {
      "student": rng.normal(size=(size, 8)), "teacher": rng.normal(size=(size, 8)),
      "viewpoint": np.stack([rng.uniform(0, 360, size), rng.uniform(-90, 90, size),
                             rng.uniform(-180, 180, size)], -1),
      "student_pose": _pose([rng.normal(size=(size, n)) for n in COUNTS],
                            [rng.normal(size=(size, n)) for n in COUNTS]),
      "teacher_pose": _pose([rng.normal(size=(size, n)) for n in COUNTS],
                            [rng.normal(size=(size, n)) for n in COUNTS]),
  }
  batch = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), batch)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  assert len(sharded["student"].sharding.device_set) == 8
  single = jax.device_put(batch, jax.devices()[0])
  fn = jax.jit(_all_losses)
  got, want = fn(sharded), fn(single)
  for name in want:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6, err_msg=name)
  grad_fn = jax.jit(jax.grad(lambda b: sum(_all_losses(b).values())))
  grads, single_grads = jax.device_get((grad_fn(sharded), grad_fn(single)))
  largest = max(np.abs(g).max() for g in jax.tree.leaves(single_grads))
  assert largest > 0
  # Every gradient, not only that they are finite: one wrong by a factor passes isfinite.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * largest),
               grads, single_grads)
