"""The Pascal3D+ builder on a tiny raw download in the official layout (tests/raw_fixtures.py)."""

import os

import numpy as np
import pytest
import raw_fixtures as rf

from kdpose.data import features, pascal3d


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("pascal3d")


@pytest.fixture(scope="module")
def built(root):
  return rf.build_fixture(root, rf.make_pascal3d, pascal3d.Pascal3D, ("train", "test"))


def test_splits_are_imagenet_plus_pascal_train_and_voc_val(built):
  builder, splits = built
  assert set(builder.info.splits) == {"train", "test"}
  assert sorted(splits["train"]) == ["aeroplane_imagenet/n02691156_1/0",
                                     "aeroplane_pascal/2008_000002/0"]
  # 2008_000001 is in VOC2012 val. Its aeroplane comes once (from the aeroplane folder) although
  # the car folder annotates it too; its car is object 1 of the car folder's record.
  assert sorted(splits["test"]) == ["aeroplane_pascal/2008_000001/0", "car_pascal/2008_000001/1"]


def test_known_object_values(built):
  builder, splits = built
  names = builder.info.features["category"].names
  plane = splits["train"]["aeroplane_imagenet/n02691156_1/0"]
  assert names[plane["category"]] == "aeroplane"
  np.testing.assert_allclose(plane["viewpoint"], [100.0, 20.0, 3.0])
  # Box edges (2, 3, 40, 30) in 50x40, 30% context: crop x 0..50, y 0..39 -> 50x39 -> 64x50.
  assert plane["image"].shape == (50, 64, 3)
  np.testing.assert_allclose(plane["bbox"], [3 / 39, 2 / 50, 30 / 39, 40 / 50], atol=1e-6)
  car = splits["test"]["car_pascal/2008_000001/1"]
  assert names[car["category"]] == "car" and car["has_keypoints"]
  np.testing.assert_allclose(car["viewpoint"], [90.0, 5.0, 0.0])
  coarse = splits["train"]["aeroplane_pascal/2008_000002/0"]
  np.testing.assert_allclose(coarse["viewpoint"], [250.0, 30.0, 0.0])
  assert coarse["truncated"] and not coarse["occluded"]
  # Box edges (0, 0, 44, 20) clipped to the 40x40 photo: crop 40x26 (20 + 30% of 20) -> 64x42.
  assert coarse["image"].shape == (42, 64, 3)
  np.testing.assert_allclose(coarse["bbox"], [0.0, 0.0, 20 / 26, 1.0], atol=1e-6)


def test_points_follow_the_cad_index(built):
  _, splits = built
  cube = splits["test"]["aeroplane_pascal/2008_000001/0"]["points"].astype(np.float64)
  slab = splits["train"]["aeroplane_imagenet/n02691156_1/0"]["points"].astype(np.float64)
  # CAD/aeroplane/01.off is a cube (corners at radius 1 -> extents 2/sqrt(3)); 02 is 1 x 0.6 x 0.2.
  np.testing.assert_allclose(np.ptp(cube, axis=0), 2 / np.sqrt(3), atol=0.15)
  extent = np.ptp(slab, axis=0)
  assert extent[0] > extent[1] > extent[2]


@pytest.mark.parametrize("object_id, cad", [
    ("aeroplane_imagenet/n02691156_1/0", "aeroplane/02"),  # a=100 e=20 t=3
    ("aeroplane_pascal/2008_000001/0", "aeroplane/01"),  # a=200 e=-10 t=0
    ("car_pascal/2008_000001/1", "car/01")])  # a=90 e=5 t=0
def test_labels_project_the_cad_model_as_the_pascal3d_toolbox_does(built, root, object_id, cad):
  _, splits = built
  example = {**splits["train"], **splits["test"]}[object_id]
  folder, image_id, index = object_id.split("/")
  vp = rf.read_mat_viewpoint(root / "raw" / "Annotations" / folder / f"{image_id}.mat",
                             int(index))
  vertices = rf.read_off(root / "raw" / "CAD" / f"{cad}.off")
  rf.assert_projects_as_the_toolbox(vertices, example["viewpoint"], vp, min_extent=50)


def test_skips_and_drops_are_counted(built):
  builder, _ = built
  assert builder.skip_logs["train"].skipped == {"no CAD index": 1}
  assert builder.skip_logs["test"].dropped == {"class not aeroplane": 1, "class not car": 1}
  assert builder.skip_logs["test"].skipped == {}


def test_metadata(built):
  builder, _ = built
  assert builder.info.features["category"].names == list(pascal3d.CATEGORIES)
  assert builder.info.metadata[features.NOVEL_CATEGORIES_KEY] == ["bus", "motorbike"]


def test_missing_voc_val_list_fails_loudly(tmp_path):
  raw = os.fspath(tmp_path / "raw")
  rf.make_pascal3d(raw)
  os.remove(os.path.join(raw, "PASCAL/VOCdevkit/VOC2012/ImageSets/Main/sofa_val.txt"))
  with pytest.raises(FileNotFoundError, match="sofa_val.txt"):
    rf.build(pascal3d.Pascal3D, os.fspath(tmp_path / "data"), raw)


def test_missing_annotation_folder_fails_loudly(tmp_path):
  import shutil

  raw = os.fspath(tmp_path / "raw")
  rf.make_pascal3d(raw)
  pascal3d.split_items(raw)  # the fixture's layout is complete
  shutil.rmtree(os.path.join(raw, "Annotations", "sofa_imagenet"))
  with pytest.raises(FileNotFoundError, match=r"Annotation folder .*/sofa_imagenet is missing"):
    pascal3d.split_items(raw)
