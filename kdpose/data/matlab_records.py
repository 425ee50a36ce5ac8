"""The MATLAB ``record`` annotations of Pascal3D+ and ObjectNet3D, and the examples made from them.

Each image has one ``.mat`` file holding a struct ``record`` with ``filename``, ``imgsize``
([width height depth]) and a struct array ``objects``; each object has ``class``, ``bbox``
([x1 y1 x2 y2], 1-based inclusive pixel indices), ``cad_index`` (1-based), ``truncated``,
``occluded``, ``difficult``, ``anchors`` (keypoints) and ``viewpoint`` (``azimuth``,
``elevation``, ``theta``, ``distance``, ... in degrees, plus ``azimuth_coarse`` /
``elevation_coarse``). Real files are loaded with ``squeeze_me=True``, so a single object comes
back as a scalar struct, and any field may be empty (``[]``).

Viewpoint rule of the Pascal3D+ toolbox: the fine ``azimuth`` / ``elevation`` are used unless they
are absent, or ``distance`` is 0 (only a coarse view was annotated) and coarse values exist; a
missing ``theta`` is 0.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator

import numpy as np
import scipy.io

from kdpose.data import crops
from kdpose.data.crops import RawDataError


@dataclasses.dataclass(frozen=True)
class Viewpoint:
  """Annotated viewpoint in degrees; ``coarse`` when the coarse azimuth/elevation were used."""

  azimuth: float
  elevation: float
  theta: float
  distance: float | None
  coarse: bool

  @property
  def angles(self) -> tuple[float, float, float]:
    return self.azimuth, self.elevation, self.theta


@dataclasses.dataclass(frozen=True)
class MatObject:
  """One annotated object; ``index`` is its 0-based position in ``record.objects``."""

  index: int
  category: str
  bbox: tuple[float, float, float, float] | None  # 1-based inclusive [x1 y1 x2 y2].
  cad_index: int | None  # 1-based; None when absent or not positive.
  truncated: bool
  occluded: bool
  difficult: bool
  has_keypoints: bool
  viewpoint: Viewpoint | None

  @property
  def box_edges(self) -> tuple[float, float, float, float]:
    """The box as pixel edges (0 = left edge of the first pixel): (x1 - 1, y1 - 1, x2, y2)."""
    x1, y1, x2, y2 = self.bbox
    return x1 - 1.0, y1 - 1.0, x2, y2


@dataclasses.dataclass(frozen=True)
class MatRecord:
  filename: str
  image_size: tuple[int, int] | None  # (width, height)
  objects: tuple[MatObject, ...]


def _field(struct, name: str):
  """The field's value, or None when it is absent or empty."""
  value = getattr(struct, name, None)
  if value is None or (isinstance(value, (str, np.ndarray)) and np.size(value) == 0):
    return None
  return value


def _scalar(struct, name: str) -> float | None:
  value = _field(struct, name)
  if value is None or isinstance(value, scipy.io.matlab.mat_struct):
    return None
  array = np.asarray(value, dtype=np.float64).ravel()
  if array.size != 1:
    raise ValueError(f"field {name!r} holds {array.size} values, expected 1")
  return float(array[0]) if np.isfinite(array[0]) else None


def _flag(struct, name: str) -> bool:
  return bool(_scalar(struct, name) or 0.0)


def read_viewpoint(viewpoint) -> Viewpoint | None:
  """The angles of a ``viewpoint`` struct (see the module docstring), None without any."""
  if not isinstance(viewpoint, scipy.io.matlab.mat_struct):
    return None
  fine = (_scalar(viewpoint, "azimuth"), _scalar(viewpoint, "elevation"))
  coarse = (_scalar(viewpoint, "azimuth_coarse"), _scalar(viewpoint, "elevation_coarse"))
  distance = _scalar(viewpoint, "distance")
  has_fine, has_coarse = None not in fine, None not in coarse
  use_coarse = has_coarse and (not has_fine or distance == 0.0)
  if not (has_fine or use_coarse):
    return None
  azimuth, elevation = coarse if use_coarse else fine
  return Viewpoint(azimuth, elevation, _scalar(viewpoint, "theta") or 0.0, distance, use_coarse)


def _read_object(index: int, obj) -> MatObject:
  category = _field(obj, "class")
  if not isinstance(category, str):
    raise ValueError(f"object {index} has no class name")
  bbox = _field(obj, "bbox")
  bbox = None if bbox is None else np.asarray(bbox, np.float64).ravel()
  cad_index = _scalar(obj, "cad_index")
  if cad_index is not None and cad_index != int(cad_index):
    raise ValueError(f"object {index} has cad_index {cad_index}, not an integer")
  anchors = _field(obj, "anchors")
  return MatObject(
      index=index, category=category.strip(),
      bbox=tuple(bbox) if bbox is not None and bbox.size == 4 and np.isfinite(bbox).all()
      else None,
      cad_index=int(cad_index) if cad_index and cad_index > 0 else None,
      truncated=_flag(obj, "truncated"), occluded=_flag(obj, "occluded"),
      difficult=_flag(obj, "difficult"),
      # As the anchors count it: a keypoint struct is present (ObjectNet3D stores [] otherwise).
      has_keypoints=isinstance(anchors, scipy.io.matlab.mat_struct)
      and bool(anchors._fieldnames),
      viewpoint=read_viewpoint(_field(obj, "viewpoint")))


def read_record(path: str) -> MatRecord:
  """Reads ``path``; raises `RawDataError` when it is missing, unreadable or malformed."""
  if not os.path.isfile(path):
    raise RawDataError("missing annotation", path)
  try:
    record = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)["record"]
  except KeyError as error:
    raise RawDataError("malformed annotation", path, "no variable 'record'") from error
  except Exception as error:  # scipy raises many types on a corrupt or truncated file.
    raise RawDataError("unreadable annotation", path, f"{type(error).__name__}: {error}"
                       ) from error
  try:
    if not isinstance(record, scipy.io.matlab.mat_struct):
      raise ValueError("'record' is not a struct")
    objects = _field(record, "objects")
    objects = () if objects is None else np.atleast_1d(objects).ravel()
    size = _field(record, "imgsize")
    size = None if size is None else np.asarray(size, np.float64).ravel()
    return MatRecord(
        filename=str(_field(record, "filename") or "").strip(),
        image_size=(int(size[0]), int(size[1])) if size is not None and size.size >= 2 else None,
        objects=tuple(_read_object(i, obj) for i, obj in enumerate(objects)))
  except (ValueError, TypeError, AttributeError) as error:
    raise RawDataError("malformed annotation", path, str(error)) from error


def read_id_list(path: str) -> list[str]:
  """Image ids listed in a split file (first token of each non-empty line)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Split file {path} is missing from the manual download.")
  with open(path) as f:
    return [line.split()[0] for line in f if line.strip()]


class MatRecordBuilder(crops.RealPhotoBuilder, skip_registration=True):
  """A real-photo builder whose annotations are MATLAB records (Pascal3D+, ObjectNet3D)."""

  def _record_examples(
      self, mat_path: str, image_dir: str, *, id_prefix: str, wanted_class: str | None,
      fallback_image: str, cad_path: Callable[[MatObject], str], cache, log: crops.SkipLog,
  ) -> Iterator[tuple[str, dict]]:
    """Examples of the non-difficult objects of one record.

    The image is ``image_dir/record.filename`` (``fallback_image`` when the record has none).
    ``wanted_class``: only objects of this class (Pascal3D+ folders); None: any known class.
    ``cad_path``: the object's CAD file relative to the manual dir. Bad data is skipped into
    ``log``: a whole record when the annotation or the image is bad, else one object.
    """
    with log.skipping():
      record = read_record(mat_path)
      objects = [obj for obj in record.objects if self._wanted(obj, wanted_class, log)]
      if not objects:
        return
      image_path = os.path.join(image_dir, record.filename or fallback_image)
      image = crops.load_rgb(image_path, record.image_size)
      for obj in objects:
        with log.skipping():
          example = self._object_example(obj, image, mat_path, cad_path, cache,
                                         f"{id_prefix}/{obj.index}")
          log.admit(example["object_id"], f"{mat_path} object {obj.index}")
          yield example["object_id"], example

  def _wanted(self, obj: MatObject, wanted_class: str | None, log: crops.SkipLog) -> bool:
    known = obj.category == wanted_class if wanted_class else obj.category in self.CATEGORIES
    if not known:
      log.drop(f"class not {wanted_class}" if wanted_class else "class not in the dataset")
    elif obj.difficult:
      log.drop("difficult")
    elif obj.viewpoint is None:
      log.drop("no viewpoint")
    else:
      return True
    return False

  def _object_example(self, obj: MatObject, image, mat_path: str,
                      cad_path: Callable[[MatObject], str], cache, object_id: str) -> dict:
    where = f"{mat_path} object {obj.index}"
    if obj.bbox is None:
      raise RawDataError("no box", where)
    if obj.cad_index is None:
      raise RawDataError("no CAD index", where)
    return self._example(
        image, obj.box_edges, source=where, viewpoint=obj.viewpoint.angles,
        points=cache.points(cad_path(obj)), category=obj.category, object_id=object_id,
        shape_id=f"{obj.category}/{obj.cad_index:02d}",
        truncated=obj.truncated, occluded=obj.occluded, difficult=obj.difficult,
        has_keypoints=obj.has_keypoints)
