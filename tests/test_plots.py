"""Evaluation pictures: files, sizes, colours of the groups, which records the grid shows."""

import numpy as np
import pytest
from PIL import Image

from kdpose import geometry, metrics, plots
from kdpose.data import pipeline

BASE_RGB = (0x4C, 0x72, 0xB0)
NOVEL_RGB = (0xDD, 0x84, 0x52)


def _evaluation(num_categories=5, count=60, novel=("cat_3", "cat_4"), seed=0):
  rng = np.random.default_rng(seed)
  categories = np.array([f"cat_{i % num_categories}" for i in range(count)])
  target = np.stack([rng.uniform(0, 360, count), rng.uniform(-60, 60, count),
                     rng.uniform(-30, 30, count)], -1)
  predicted = geometry.canonical_viewpoint(target + rng.normal(0, 40, (count, 3)))
  error = geometry.rotation_error(predicted, target)
  predictions = {"viewpoint": predicted, "target": target, "error": error,
                 "confidence": np.full((count, 3), 0.5)}
  report = metrics.viewpoint_report(error, categories, novel_categories=novel)
  return report, predictions, categories


def _has_colour(image, rgb):
  return bool(np.any(np.all(image == np.array(rgb, np.uint8), axis=-1)))


def test_writes_the_three_pictures(tmp_path):
  report, predictions, categories = _evaluation()
  requested = []

  def images_fn(k):
    requested.append(k)
    return np.full((24, 24, 3), 90, np.uint8)

  written = plots.write_evaluation_plots(report, predictions, images_fn, str(tmp_path / "eval"),
                                         "student_test", categories=categories)
  sizes = {"acc_by_category": (450, 600), "errors": (400, 1000), "worst_best": (440, 1320)}
  assert set(written) == set(sizes)
  for name, (path, image) in written.items():
    assert path == str(tmp_path / "eval" / f"student_test_{name}.png")
    assert image.shape == (*sizes[name], 3) and image.dtype == np.uint8
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), image)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 20  # not a blank canvas.
  for name in ("acc_by_category", "errors"):
    assert _has_colour(written[name].image, BASE_RGB) and _has_colour(written[name].image,
                                                                       NOVEL_RGB), name
  order = np.argsort(predictions["error"], kind="stable")
  assert sorted(requested) == sorted(order[:8].tolist() + order[-8:].tolist())


def test_bars_grow_with_categories_and_single_group_has_no_novel_colour(tmp_path):
  report, predictions, categories = _evaluation(num_categories=30, count=90, novel=())
  written = plots.write_evaluation_plots(
      report, predictions, lambda k: np.zeros((8, 8, 3), np.uint8), str(tmp_path), "x",
      categories=categories)
  assert written["acc_by_category"].image.shape == (450, 1100, 3)  # (0.3 * 30 + 2) in at 100 dpi.
  assert not _has_colour(written["errors"].image, NOVEL_RGB)
  assert _has_colour(written["errors"].image, BASE_RGB)


def test_few_records_and_mismatched_categories(tmp_path):
  report, predictions, categories = _evaluation(count=3, num_categories=3, novel=("cat_2",))
  written = plots.write_evaluation_plots(
      report, predictions, lambda k: np.zeros((8, 8, 3), np.uint8), str(tmp_path), "x",
      categories=categories)
  assert written["worst_best"].image.shape == (440, round(100 * (1.6 * 3 + 0.4)), 3)
  with pytest.raises(ValueError, match="3 predictions but 2 categories"):
    plots.write_evaluation_plots(report, predictions, None, str(tmp_path), "x",
                                 categories=categories[:2])


def test_record_crops_crop_the_box():
  image = np.zeros((40, 50, 3), np.uint8)
  image[10:30, 20:40] = (200, 30, 30)  # the object fills its box exactly.
  example = {"image": image, "bbox": np.array([10 / 40, 20 / 50, 30 / 40, 40 / 50]),
             "viewpoint": np.zeros(3, np.float32), "points": np.zeros((4, 3), np.float32),
             "category": 0}
  data = pipeline.SplitData(source=[None, example], indices=np.array([1]),
                            categories=np.array(["a"]), shape_ids=np.array(["s"]),
                            category_names=["a"], category_symmetry=np.zeros(1, np.int32),
                            novel_categories=[], pad_size=64, num_points=4)
  crop = plots.record_crops(data, size=16)(0)
  assert crop.shape == (16, 16, 3)
  np.testing.assert_allclose(crop[2:-2, 2:-2].reshape(-1, 3).mean(0), (200, 30, 30), atol=1.0)
