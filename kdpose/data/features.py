"""The feature dict that every kdpose TFDS builder yields, so one input pipeline reads them all."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

# Builder metadata keys (in `DatasetInfo.metadata`).
NOVEL_CATEGORIES_KEY = "novel_categories"  # categories held out of training (zero-shot protocol).
# {category: "two_fold" | "continuous"} (geometry.SYMMETRY_NAMES); unnamed categories have none.
CATEGORY_SYMMETRY_KEY = "category_symmetry"


def example_features(
    category_names: Sequence[str],
    *,
    num_points: int,
    image_shape: tuple[int | None, int | None, int] = (None, None, 3),
    image_format: str = "png",
    points_dtype=np.float32,
) -> tfds.features.FeaturesDict:
  """Features of one object example.

  - image: uint8 [H, W, 3], a crop around the object with context margin.
  - bbox: the object's box in that crop (tfds BBox, normalised ymin, xmin, ymax, xmax).
  - viewpoint: float32 [3], azimuth, elevation, in-plane rotation in degrees (see geometry.py).
  - points: [num_points, 3] surface samples of the object's shape in the object frame
    (z up, front -y), centred and scaled to the unit sphere.
  - category: class label; object_id: text naming the source image/render and object;
    shape_id: text naming the object's shape (mesh or CAD model), the unit that evaluation
    intervals resample.
  - truncated, occluded, difficult, has_keypoints: bools used by evaluation filters.
  """
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=image_shape, encoding_format=image_format),
      "bbox": tfds.features.BBoxFeature(),
      "viewpoint": tfds.features.Tensor(shape=(3,), dtype=np.float32),
      "points": tfds.features.Tensor(shape=(num_points, 3), dtype=points_dtype),
      "category": tfds.features.ClassLabel(names=list(category_names)),
      "object_id": tfds.features.Text(),
      "shape_id": tfds.features.Text(),
      "truncated": tfds.features.Scalar(dtype=np.bool_),
      "occluded": tfds.features.Scalar(dtype=np.bool_),
      "difficult": tfds.features.Scalar(dtype=np.bool_),
      "has_keypoints": tfds.features.Scalar(dtype=np.bool_),
  })
