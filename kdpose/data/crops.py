"""Real-photo examples: the object crop, and the build scaffolding the real benchmarks share.

The builders of ObjectNet3D, Pascal3D+ and Pix3D read the user's manual download, crop each
annotated object out of its photo with some context around the box, and store the crop as JPEG
with the object's box re-expressed in it. Raw data is messy: whatever cannot become a correct
example raises `RawDataError` naming the file, and the builder counts it in a `SkipLog` (a warning
per file, a summary line per split) instead of crashing inside TFDS or storing a wrong label.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from kdpose import geometry
from kdpose.data import features as features_lib

JPEG_QUALITY = 90
# Points are stored as float16. TFDS writes float tensors as a float32 list either way, but
# float16-rounded values compress better in array_record: measured on 400 examples (256 px JPEG
# crops of photos, 2048 points of 20 different meshes) 23.3 KB per example instead of 28.3 KB
# (points ~14 KB instead of ~19 KB). The rounding error of unit-sphere
# coordinates is at most 2.4e-4, far below the ~0.05 spacing of 2048 surface samples. The input
# pipeline casts them back to float32.
POINTS_DTYPE = np.float16
# A file-level warning is logged for the first few skips of each reason; all are counted.
_WARNINGS_PER_REASON = 20


@dataclasses.dataclass(eq=False)
class RealPhotoConfig(tfds.core.BuilderConfig):
  """Build options of a real-photo benchmark.

  Attributes:
    image_longer_side: pixels of the stored crop's longer side (the shorter keeps the aspect).
    num_points: surface points of the object's CAD model stored per example.
    context: margin added on each side of the box before cropping, as a fraction of the box's
      width (left/right) and height (top/bottom); the crop stops at the image border.
  """

  image_longer_side: int = 256
  num_points: int = 2048
  context: float = 0.3


class RawDataError(Exception):
  """Raw data that cannot become a correct example.

  Attributes:
    reason: short category used in the skip summary, e.g. "missing image".
    path: the offending file.
    detail: what is wrong with it, when the reason does not say it all.
  """

  def __init__(self, reason: str, path: str | os.PathLike, detail: str = ""):
    self.reason = reason
    self.path = os.fspath(path)
    self.detail = detail
    super().__init__(f"{reason}: {self.path}" + (f" ({detail})" if detail else ""))


class SkipLog:
  """Counts what a split build leaves out: bad raw data (warned) and planned drops (counted)."""

  def __init__(self, dataset: str, split: str):
    self.dataset = dataset
    self.split = split
    self.skipped: collections.Counter[str] = collections.Counter()
    self.dropped: collections.Counter[str] = collections.Counter()
    self._keys: set[str] = set()

  @property
  def kept(self) -> int:
    return len(self._keys)

  @contextlib.contextmanager
  def skipping(self) -> Iterator[None]:
    """Runs the block; a `RawDataError` inside it is counted and logged, then swallowed."""
    try:
      yield
    except RawDataError as error:
      self.skipped[error.reason] += 1
      if self.skipped[error.reason] <= _WARNINGS_PER_REASON:
        logging.warning("%s/%s: skipped, %s", self.dataset, self.split, error)
      elif self.skipped[error.reason] == _WARNINGS_PER_REASON + 1:
        logging.warning("%s/%s: more %r skips are counted without a warning.", self.dataset,
                        self.split, error.reason)

  def admit(self, key: str, source: str) -> None:
    """Counts an example about to be written; a repeated key (TFDS would abort) is bad data."""
    if key in self._keys:
      raise RawDataError("duplicate example", source, f"key {key!r} already written")
    self._keys.add(key)

  def drop(self, reason: str) -> None:
    """Counts an object left out on purpose (e.g. difficult), without a warning."""
    self.dropped[reason] += 1

  def summary(self) -> str:
    def fmt(counter):
      return ", ".join(f"{n} {reason}" for reason, n in sorted(counter.items())) or "none"
    return (f"{self.dataset}/{self.split}: {self.kept} examples written; skipped bad raw data: "
            f"{fmt(self.skipped)}; dropped on purpose: {fmt(self.dropped)}.")

  def finish(self) -> None:
    """Logs the summary; raises when nothing was kept (TFDS would fail with no reason given)."""
    (logging.warning if self.skipped else logging.info)("%s", self.summary())
    if not self.kept:
      raise RuntimeError(f"{self.summary()} No example left: check the manual download.")


class RealPhotoBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """What the real-photo builders share: configs, DatasetInfo, manual-dir checks, skip logs.

  Subclasses set CATEGORIES, NOVEL_CATEGORIES, CATEGORY_SYMMETRY, REQUIRED_PATHS (entries that
  must exist in the manual dir), HOMEPAGE, CITATION, MANUAL_DOWNLOAD_INSTRUCTIONS, and implement
  `_split_generators` / `_generate_examples`. After a build, `skip_logs[split]` holds the counts.
  """

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release.",
                   "1.1.0": "shape_id (the CAD model) per example; category_symmetry metadata."}
  BUILDER_CONFIGS = [
      RealPhotoConfig(name="default", description="256 px crops, 2048 points per example."),
      RealPhotoConfig(name="small", image_longer_side=128, num_points=1024,
                      description="128 px crops, 1024 points per example (CPU runs)."),
  ]
  DEFAULT_CONFIG_NAME = "default"
  CATEGORIES: Sequence[str] = ()
  NOVEL_CATEGORIES: Sequence[str] = ()
  CATEGORY_SYMMETRY: Mapping[str, str] = {}
  REQUIRED_PATHS: Sequence[str] = ()
  HOMEPAGE = ""
  CITATION = ""

  @property
  def skip_logs(self) -> dict[str, SkipLog]:
    return self.__dict__.setdefault("_skip_logs", {})

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=(self.__doc__ or "").strip(),
        features=features_lib.example_features(
            self.CATEGORIES, num_points=config.num_points, image_format="jpeg",
            points_dtype=POINTS_DTYPE),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict({
            features_lib.NOVEL_CATEGORIES_KEY: list(self.NOVEL_CATEGORIES),
            features_lib.CATEGORY_SYMMETRY_KEY: dict(self.CATEGORY_SYMMETRY),
        }),
    )

  def _manual_root(self, dl_manager: tfds.download.DownloadManager) -> str:
    """The manual dir, checked for the official layout (TFDS raises if it is missing/empty)."""
    root = os.fspath(dl_manager.manual_dir)
    missing = [p for p in self.REQUIRED_PATHS if not os.path.exists(os.path.join(root, p))]
    if missing:
      raise FileNotFoundError(
          f"Manual directory {root} lacks {', '.join(missing)}: it does not hold the official "
          f"{self.name} layout. Download/extract the dataset there using instructions:\n"
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return root

  def _new_skip_log(self, split: str) -> SkipLog:
    log = self.skip_logs[split] = SkipLog(self.name, split)
    return log

  def _example(self, image: Image.Image, box: Sequence[float], *, source: str,
               viewpoint: Sequence[float], points: np.ndarray, category: str, object_id: str,
               shape_id: str,
               truncated: bool, occluded: bool, difficult: bool, has_keypoints: bool) -> dict:
    """The feature dict of one object.

    ``box`` is (x1, y1, x2, y2) in pixel-edge coordinates of ``image``; ``viewpoint`` the
    azimuth, elevation, in-plane angles in degrees (any range); ``shape_id`` names the CAD model;
    ``source`` names the annotation in error messages.
    """
    config = self.builder_config
    jpeg, bbox = crop_object(image, box, longer_side=config.image_longer_side,
                             context=config.context, path=source)
    return {
        "image": jpeg, "bbox": bbox,
        "viewpoint": canonical_viewpoint(viewpoint),
        "points": np.asarray(points, POINTS_DTYPE), "category": category, "object_id": object_id,
        "shape_id": shape_id,
        "truncated": bool(truncated), "occluded": bool(occluded),
        "difficult": bool(difficult), "has_keypoints": bool(has_keypoints),
    }


def canonical_viewpoint(viewpoint: Sequence[float]) -> np.ndarray:
  """float32 ``[3]`` degrees in the canonical ranges (azimuth [0, 360), elevation clipped)."""
  angles = geometry.canonical_viewpoint(np.asarray(viewpoint, np.float64)).astype(np.float32)
  if angles[0] >= 360.0:  # -1e-9 wraps to 360 - 1e-9, which rounds to 360 in float32.
    angles[0] = 0.0
  return angles


def load_rgb(path: str, expected_size: tuple[int, int] | None = None) -> Image.Image:
  """Loads a photo as RGB (grayscale, 16-bit grayscale, palette, CMYK, alpha converted).

  The pixels as stored: EXIF orientation is not applied, because the datasets' boxes, image
  sizes and viewpoints refer to the stored pixels (``kdpose.predict`` applies it to users'
  photos, whose boxes are drawn on the upright picture).

  ``expected_size`` (width, height) from the annotation guards against boxes that refer to a
  different image; a mismatch, a missing or an undecodable file raise `RawDataError`.
  """
  if not os.path.isfile(path):
    raise RawDataError("missing image", path)
  try:
    with Image.open(path) as image:
      if image.mode.startswith("I;16") or image.mode == "I":  # 16-bit: convert() would saturate.
        image = Image.fromarray((np.asarray(image, np.float64) / 257.0).clip(0, 255).astype(
            np.uint8))
      rgb = image.convert("RGB")
  except (OSError, ValueError, Image.DecompressionBombError) as error:
    raise RawDataError("unreadable image", path, str(error)) from error
  if expected_size is not None and tuple(expected_size) != rgb.size:
    raise RawDataError("image size differs from annotation", path,
                       f"annotated {tuple(expected_size)}, file {rgb.size}")
  return rgb


def crop_object(image: Image.Image, box: Sequence[float], *, longer_side: int, context: float,
                path: str = "") -> tuple[bytes, tfds.features.BBox]:
  """Crops the box with context and resizes the crop so its longer side is ``longer_side``.

  Args:
    image: the RGB photo.
    box: (x1, y1, x2, y2) in pixel-edge coordinates (0 = the left edge of the first pixel);
      clipped to the image.
    longer_side: pixels of the crop's longer side after resizing (up or down).
    context: margin per side as a fraction of the box's width / height.
    path: the photo's file, for error messages.

  Returns:
    JPEG bytes of the crop, and the box in it (tfds BBox normalised to [0, 1]).
  """
  width, height = image.size
  x1, y1, x2, y2 = (float(v) for v in box)
  x1, x2 = np.clip([x1, x2], 0.0, width)
  y1, y2 = np.clip([y1, y2], 0.0, height)
  if not (x2 - x1 >= 1.0 and y2 - y1 >= 1.0):
    shown = ", ".join(f"{float(v):g}" for v in box)
    raise RawDataError("degenerate box", path, f"box ({shown}) in a {width}x{height} image")
  margin_x, margin_y = context * (x2 - x1), context * (y2 - y1)
  left, top = int(max(0.0, np.floor(x1 - margin_x))), int(max(0.0, np.floor(y1 - margin_y)))
  right = int(min(width, np.ceil(x2 + margin_x)))
  bottom = int(min(height, np.ceil(y2 + margin_y)))
  crop_w, crop_h = right - left, bottom - top
  scale = longer_side / max(crop_w, crop_h)
  size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
  crop = image.crop((left, top, right, bottom)).resize(size, Image.Resampling.BICUBIC)
  buffer = io.BytesIO()
  crop.save(buffer, format="JPEG", quality=JPEG_QUALITY)
  bbox = tfds.features.BBox(
      ymin=(y1 - top) / crop_h, xmin=(x1 - left) / crop_w,
      ymax=(y2 - top) / crop_h, xmax=(x2 - left) / crop_w)
  return buffer.getvalue(), bbox
