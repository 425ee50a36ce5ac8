"""tools/feature_probe.py: source names, the zero-shot training set, a probe that learns what its
features encode (and not shuffled labels), the feature cache, and a tiny end-to-end comparison."""

import json
import types

import numpy as np
import pytest

from configs import default
from kdpose import geometry
from kdpose.data import pipeline, registry
from kdpose.trainers import frozen_features
from tools import feature_probe


@pytest.fixture(scope="module")
def tiny_dataset(data_dir):
  config = default.get_config("tiny")
  config.dataset.data_dir = data_dir  # the session's tiny dataset (tests/conftest.py)
  registry.prepare(config.dataset)
  return config.dataset


@pytest.fixture(scope="module")
def tiny_extractor():
  """A random tiny ResNet instead of Lite0: the same code path, a fraction of the time."""
  return frozen_features.make_extractor("resnet_tiny", "", 32)


def _options(cache_dir, source_sets=("all",)):
  options = feature_probe.default_options()
  options.update(dict(encoder="resnet_tiny", weights="", image_size=32, cache_dir=str(cache_dir),
                      source_sets=source_sets, num_resamples=50))
  options.probe.update(dict(epochs=3, batch_size=32, hidden_widths=(16,), embedding_dim=16))
  return options


def test_shape_source_names_every_mesh_source():
  ids = {"Contributions/12": "sweethome3d", "DefaultCatalog/3": "sweethome3d",
         "flightgear_ai/AI/Aircraft/A320/Models/a320.ac": "flightgear_ai",
         "flightgear_models/Models/Maritime/ship.ac": "flightgear_models",
         "crrcsim/models/plane.ac": "crrcsim", "torcs/cars/car1/car1.acc": "torcs",
         "0ad/art/meshes/props/ship.dae": "0ad", "primitive/car/0": "primitives"}
  assert {i: feature_probe.shape_source(i) for i in ids} == ids
  assert feature_probe.source_set("all") is None
  assert feature_probe.source_set("sweethome3d, torcs") == ("sweethome3d", "torcs")
  with pytest.raises(ValueError, match="unknown sources \\['sweethome'\\]"):
    feature_probe.source_set("sweethome,torcs")


def test_training_set_keeps_base_categories_of_the_sources_and_mirrors_them():
  records = {
      "features": np.arange(8.0).reshape(4, 2), "flipped": -np.arange(8.0).reshape(4, 2),
      "viewpoint": np.array([[30.0, 10.0, 20.0]] * 4), "symmetry": np.array([0, 0, 1, 0]),
      "category": np.array(["chair", "bed", "car", "car"]),
      "shape_id": np.array(["Contributions/1", "Contributions/2", "torcs/cars/a", "0ad/b"])}
  train = feature_probe.training_set(records, ["bed"], ("sweethome3d", "torcs"), flip=True)
  np.testing.assert_array_equal(train["category"], ["chair", "car", "chair", "car"])
  np.testing.assert_array_equal(train["features"], [[0, 1], [4, 5], [0, -1], [-4, -5]])
  np.testing.assert_allclose(train["viewpoint"][2:], [[330.0, 10.0, -20.0]] * 2)
  np.testing.assert_array_equal(train["symmetry"], [0, 1, 0, 1])
  every = feature_probe.training_set(records, ["bed"], None, flip=False)
  assert "bed" not in every["category"] and len(every["category"]) == 3
  with pytest.raises(ValueError, match="sources are \\['0ad', 'sweethome3d', 'torcs'\\]"):
    feature_probe.training_set(records, ["bed"], ("crrcsim",), flip=False)


def _encoded(viewpoint):
  """Features that encode a viewpoint exactly: one-hot bins and cos/sin of each angle."""
  bins, _ = geometry.encode_viewpoint(viewpoint)
  one_hot = [np.eye(n)[bins[:, i]] for i, n in enumerate(geometry.num_bins())]
  radians = np.deg2rad(viewpoint)
  return np.concatenate([*one_hot, np.cos(radians), np.sin(radians)], 1).astype(np.float32)


def _views(rng, n):
  return np.stack([rng.uniform(0, 360, n), rng.uniform(-80, 80, n), rng.uniform(-60, 60, n)],
                  1).astype(np.float32)


def test_probe_learns_encoded_viewpoints_and_not_shuffled_labels():
  rng = np.random.default_rng(0)
  train_views, test_views = _views(rng, 1024), _views(rng, 256)
  test = {"viewpoint": test_views, "symmetry": np.zeros(256, np.int32),
          "category": np.array(["thing"] * 256)}
  data = types.SimpleNamespace(novel_categories=[], category_names=["thing"],
                               category_symmetry=np.zeros(1, np.int32))
  probe = feature_probe.default_options().probe
  probe.update(dict(epochs=30, hidden_widths=(128,), embedding_dim=128))
  acc = {}
  for labels, name in ((train_views, "true"), (train_views[rng.permutation(1024)], "shuffled")):
    train = {"features": _encoded(train_views), "viewpoint": labels,
             "symmetry": np.zeros(1024, np.int32)}
    model, variables, fit = feature_probe.fit_probe(train, probe)
    assert fit["steps"] == 120  # 30 epochs of 1024 records, batch 256
    pred = feature_probe.predict(model, variables, _encoded(test_views))
    report, _ = feature_probe.score(pred, test, data)
    acc[name] = report["mean"]["acc30"]
  assert acc["true"] > 90.0
  assert acc["shuffled"] < 10.0


def test_split_features_are_extracted_once_then_read_from_the_cache(tiny_dataset,
                                                                    tiny_extractor, tmp_path):
  data = pipeline.load_split(registry.prepare(tiny_dataset), "test", tiny_dataset)
  calls = []

  def counted(images, boxes, flip):
    calls.append(len(images))
    return tiny_extractor(images, boxes, flip)

  path = str(tmp_path / "test.npz")
  first = frozen_features.split_features(data, path, counted, flip=True, batch_size=16)
  assert calls == [16, 16]  # 32 test records
  again = frozen_features.split_features(data, path, counted, flip=True, batch_size=16)
  assert calls == [16, 16]
  assert sorted(first) == sorted(again) == ["category", "features", "flipped", "index",
                                            "shape_id", "symmetry", "viewpoint"]
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert first["features"].shape == first["flipped"].shape == (32, 16)  # resnet_tiny: 16-d
  assert not np.allclose(first["features"], first["flipped"])
  np.testing.assert_array_equal(first["index"], data.indices)
  np.testing.assert_array_equal(first["shape_id"], data.shape_ids)


def test_source_sets_are_compared_on_the_same_records(tiny_dataset, tiny_extractor, tmp_path):
  # Every tiny shape is a primitive: "primitives" and "all" train the same probe.
  options = _options(tmp_path, ("primitives", "all"))
  results = feature_probe.probe_sources(tiny_dataset, options, tiny_extractor)
  first, second = results["probes"]
  assert [e["cached"] for e in results["extraction"].values()] == [False, False]
  assert first["train_records"] == second["train_records"] == 100
  assert first["train_shapes"] == 10
  assert first["headline"]["mean"] == second["headline"]["mean"]
  paired = second["vs_first"]
  assert paired["mean"]["acc30"]["diff"] == {"point": 0.0, "low": 0.0, "high": 0.0}
  assert "novel" in first["headline"]["intervals"]  # bookshelf, held out of training
  assert first["headline"]["per_category"]["bookshelf"]["novel"]
  assert first["all_views"]["pooled"]["count"] == 32 > first["headline"]["pooled"]["count"]
  table = feature_probe.markdown_table(results)
  assert table.count("\n| primitives |") == 1 and table.count("\n| all |") == 1
  json.dumps(results)
  rerun = feature_probe.load_features(tiny_dataset, options, tiny_extractor)
  assert [e["cached"] for e in rerun["extraction"].values()] == [True, True]
  assert len(rerun["train"]["index"]) == 100 and len(rerun["eval"]["index"]) == 32


def test_grid_features_are_the_map_averaged_over_cells():
  images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
  boxes = np.array([[0, 0, 64, 64], [8, 4, 60, 50]], np.float32)
  pooled = frozen_features.make_extractor("resnet_tiny", "", 64)(images, boxes, False)["features"]
  cells = frozen_features.make_extractor("resnet_tiny", "", 64, grid=2)(images, boxes, False)
  cells = cells["features"].reshape(2, 4, -1)
  assert cells.shape[-1] == pooled.shape[-1]
  # Averaging the 2x2 cells gives the global pool back; the cells themselves differ.
  np.testing.assert_allclose(cells.mean(1), pooled, rtol=1e-4, atol=1e-5)
  assert np.abs(cells - cells.mean(1, keepdims=True)).max() > 1e-3
  with pytest.raises(ValueError, match="pool_grid=3 does not divide"):
    frozen_features.make_extractor("resnet_tiny", "", 64, grid=3)(images, boxes, False)
