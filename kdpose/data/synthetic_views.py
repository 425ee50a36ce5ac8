"""`synthetic_views`: the offline default dataset, rendered from real meshes with exact viewpoints.

Meshes come from the Sweet Home 3D furniture catalog (Debian ``sweethome3d-furniture``, about 380
models in ~75 ObjectNet3D-style categories), the aircraft, ships and cars of FlightGear, CRRCSim
and TORCS (``mesh_sources.py``, about 160 models) and the ships, siege engines, helmets and
shields of 0 A.D. (``zeroad.py``, about 400 models), or, for tests and machines without them,
from procedural primitives. Each example is a square crop around one rendered object
composited on a real photo (``backgrounds.py``), with the object's viewpoint, its surface points
and the usual flags (``features.example_features``).

Splits (``split_shapes``): every shape is in exactly one of ``train``, ``val`` (for tuning) and
``test`` (for reporting), by a stable hash of its id; an evaluated category has at least 5 test
shapes, and categories with too few shapes only train. Novel categories (ObjectNet3D's held-out
ones that have enough shapes, ``info.metadata["novel_categories"]``) have no train shapes.

Usage::

  builder = SyntheticViews(data_dir=..., config="small", file_format="array_record")
  builder.download_and_prepare()
  source = builder.as_data_source("train")
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import io
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds
import tqdm
from PIL import Image

from kdpose.data import backgrounds as backgrounds_lib
from kdpose.data import features, mesh_sources, primitive_shapes, shapes, sweethome3d, zeroad
from kdpose.data import renderer as renderer_lib

# ObjectNet3D's 20 held-out categories; the ones this catalog has become the novel categories.
OBJECTNET3D_NOVEL = (
    "bed", "bookshelf", "calculator", "cellphone", "computer", "door", "filing_cabinet", "guitar",
    "iron", "knife", "microwave", "pen", "pot", "rifle", "shoe", "slipper", "stove", "toilet",
    "tub", "wheelchair")
SPLITS = ("train", "val", "test")
DEFAULT_MESH_SOURCES = ("sweethome3d", "flightgear_ai", "flightgear_models",
                        "flightgear_vehicles", "crrcsim", "torcs", "0ad")


@dataclasses.dataclass(eq=False)
class SyntheticViewsConfig(tfds.core.BuilderConfig):
  """How to build one configuration of the dataset."""

  # "sweethome3d", "0ad" and the mesh_sources.SOURCES names (Debian packages), or
  # ("primitives",).
  mesh_sources: tuple[str, ...] = DEFAULT_MESH_SOURCES
  background_source: str = "photos"  # "photos" (Debian wallpapers + textures) or "procedural".
  image_size: int = 128  # pixels of the square crops.
  num_points: int = 2048  # surface points per example.
  train_views: int = 24  # renders per training shape.
  val_views: int = 8  # renders per held-out shape in val.
  test_views: int = 12  # renders per held-out shape in test (other views than val's).
  test_fraction: float = 0.2  # share of an evaluated base category's shapes in test.
  val_fraction: float = 0.1  # the same for val (tuning), disjoint from test.
  novel_val_fraction: float = 0.3  # a novel category's shapes in val; the rest go to test.
  min_test_shapes: int = 5  # an evaluated category has at least this many test shapes,
  min_val_shapes: int = 2  # this many val shapes,
  min_train_shapes: int = 5  # and (base) this many train shapes; smaller ones only train.
  max_shapes_per_category: int | None = None  # None: all.
  primitives_per_category: int = 6  # variants per category of ("primitives",).
  occluder_probability: float = 0.15  # chance that a view gets an occluder (marked occluded).
  texture_swap_probability: float = 0.1  # chance that a view repaints the object's parts.
  # Train views stretch the shape along each of its axes by a factor log-uniform in
  # [1 / (1 + s), 1 + s] (0: never), so no two train renders share an exact shape.
  train_shape_stretch: float = 0.25
  seed: int = 0
  num_workers: int | None = None  # rendering processes; None: one per CPU core, 1: in-process.
  furniture_dir: str = sweethome3d.FURNITURE_DIR
  zeroad_archive: str = zeroad.PUBLIC_ZIP


@dataclasses.dataclass(frozen=True)
class ShapeRef:
  """A shape to render: its id, class and how to load it (lazily; loading can fail)."""

  object_id: str
  category: str
  load: Callable[[], renderer_lib.TexturedMesh]


def _check_sources(config: SyntheticViewsConfig) -> tuple[str, ...]:
  names = tuple(config.mesh_sources)
  known = ("sweethome3d", "0ad", *mesh_sources.SOURCES)
  if names == ("primitives",) or (names and set(names) <= set(known)):
    return names
  raise ValueError(f"mesh_sources {names} must be ('primitives',) or names from {known}.")


def category_names(config: SyntheticViewsConfig) -> tuple[str, ...]:
  """The class names, fixed by the mesh sources (so reading a built dataset needs no meshes)."""
  names = _check_sources(config)
  if names == ("primitives",):
    return primitive_shapes.CATEGORIES
  found = set(sweethome3d.CATEGORIES) if "sweethome3d" in names else set()
  found |= set(zeroad.CATEGORIES) if "0ad" in names else set()
  for name in names:
    if name in mesh_sources.SOURCES:
      found |= set(mesh_sources.get(name).categories)
  return tuple(sorted(found))


def category_symmetry(config: SyntheticViewsConfig) -> dict[str, str]:
  if _check_sources(config) == ("primitives",):
    return primitive_shapes.CATEGORY_SYMMETRY
  names = set(category_names(config))
  symmetry = {**sweethome3d.CATEGORY_SYMMETRY, **zeroad.CATEGORY_SYMMETRY}
  return {c: kind for c, kind in sorted(symmetry.items()) if c in names}


def novel_categories(config: SyntheticViewsConfig) -> tuple[str, ...]:
  """The candidates: the built dataset's metadata keeps those with enough shapes to evaluate."""
  return tuple(c for c in category_names(config) if c in OBJECTNET3D_NOVEL)


def list_shapes(config: SyntheticViewsConfig) -> list[ShapeRef]:
  """Every shape of the configured source, sorted by id. Raises with an install hint when the
  Sweet Home 3D package is missing."""
  names = _check_sources(config)
  if names == ("primitives",):
    refs = [ShapeRef(oid, cat, functools.partial(primitive_shapes.make_shape, cat, seed))
            for oid, cat, seed in primitive_shapes.catalog(config.primitives_per_category,
                                                           config.seed)]
    return sorted(refs, key=lambda r: r.object_id)
  refs = []
  if "sweethome3d" in names:
    entries = sweethome3d.select_models(sweethome3d.read_catalog(config.furniture_dir))
    refs += [ShapeRef(e.object_id, e.category, functools.partial(sweethome3d.load_model, e))
             for e in entries]
  if "0ad" in names:
    refs += [ShapeRef(m.object_id, m.category, functools.partial(zeroad.load_model, m))
             for m in zeroad.read_actors(config.zeroad_archive)]
  for name in names:
    if name in mesh_sources.SOURCES:
      refs += [ShapeRef(m.object_id, m.category,
                        functools.partial(mesh_sources.load_model, name, m))
               for m in mesh_sources.get(name).models()]
  return _at_most_per_category(sorted(refs, key=lambda r: r.object_id),
                               config.max_shapes_per_category)


def _at_most_per_category(refs: list[ShapeRef], limit: int | None) -> list[ShapeRef]:
  """The first ``limit`` shapes of each category by stable hash (all when None)."""
  if limit is None:
    return refs
  ranked = sorted(refs, key=lambda r: stable_fraction(r.object_id))
  counts: dict[str, int] = {}
  kept = []
  for ref in ranked:
    counts[ref.category] = counts.get(ref.category, 0) + 1
    if counts[ref.category] <= limit:
      kept.append(ref)
  return sorted(kept, key=lambda r: r.object_id)


def stable_fraction(text: str) -> float:
  """A number in [0, 1) from a text, the same on every machine and run (unlike ``hash``)."""
  return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little") / 2.0**64


def split_shapes(refs: list[ShapeRef], config: SyntheticViewsConfig, novel: tuple[str, ...]
                 ) -> tuple[dict[str, list[ShapeRef]], tuple[str, ...]]:
  """Shapes per split, each shape in exactly one, and the novel categories that are evaluated.

  Per category, shapes ranked by a stable hash of their id go to test, then val, then train.
  A base category gives ``max(min_test_shapes, test_fraction * n)`` to test and
  ``max(min_val_shapes, val_fraction * n)`` to val when at least ``min_train_shapes`` remain,
  else all to train (it is then trained on, not evaluated). A novel category (``novel``) has no
  train shapes: ``max(min_val_shapes, novel_val_fraction * n)`` go to val and the rest to test
  when that leaves ``min_test_shapes``; else it only trains, as a base category.
  """
  by_category: dict[str, list[ShapeRef]] = {}
  for ref in refs:
    by_category.setdefault(ref.category, []).append(ref)
  splits: dict[str, list[ShapeRef]] = {split: [] for split in SPLITS}
  evaluated_novel = []
  for category, members in sorted(by_category.items()):
    members = sorted(members, key=lambda r: stable_fraction(r.object_id))
    n = len(members)
    if category in novel:
      num_val = max(config.min_val_shapes, round(config.novel_val_fraction * n))
      num_test = n - num_val
      evaluated = num_test >= config.min_test_shapes
      evaluated_novel += [category] if evaluated else []
    else:
      num_test = max(config.min_test_shapes, round(config.test_fraction * n))
      num_val = max(config.min_val_shapes, round(config.val_fraction * n))
      evaluated = n - num_test - num_val >= config.min_train_shapes
    if not evaluated:
      num_test = num_val = 0
    splits["test"] += members[:num_test]
    splits["val"] += members[num_test:num_test + num_val]
    splits["train"] += members[num_test + num_val:]
  return ({split: sorted(members, key=lambda r: r.object_id)
           for split, members in splits.items()}, tuple(evaluated_novel))


class EmptyRenderError(ValueError):
  """The object covers no pixel in any of a few tries (a flat or broken model)."""


def sample_viewpoint(rng: np.random.Generator) -> np.ndarray:
  """float32 [3] degrees: azimuth uniform, elevation mostly in [-10, 60], in-plane ~ N(0, 10)."""
  elevation = rng.uniform(-10, 60) if rng.random() < 0.85 else rng.uniform(-40, 85)
  inplane = np.clip(rng.normal(0.0, 10.0), -40.0, 40.0)
  return np.array([rng.uniform(0, 360), elevation, inplane], np.float32)


def crop_window(points: np.ndarray, viewpoint, distance: float, rng: np.random.Generator):
  """A square image-plane window (left, right, bottom, top) around the projected ``points``
  ``[N, 3]``, with a random context margin (10-40% each side) and a small random shift."""
  uv = renderer_lib.project_points(points, viewpoint, distance)
  low, high = uv.min(axis=0), uv.max(axis=0)
  half = float((high - low).max()) / 2.0 * (1.0 + rng.uniform(0.1, 0.4))
  cx, cy = (low + high) / 2.0 + rng.uniform(-0.1, 0.1, size=2) * half
  return (cx - half, cx + half, cy - half, cy + half)


def mask_bbox(alpha: np.ndarray, threshold: float = 0.25) -> tfds.features.BBox:
  """The normalised box (ymin, xmin, ymax, xmax) of the pixels of ``alpha`` [H, W] above
  ``threshold``."""
  rows = np.nonzero(alpha.max(axis=1) > threshold)[0]
  cols = np.nonzero(alpha.max(axis=0) > threshold)[0]
  h, w = alpha.shape
  return tfds.features.BBox(ymin=rows[0] / h, xmin=cols[0] / w, ymax=(rows[-1] + 1) / h,
                            xmax=(cols[-1] + 1) / w)


def add_occluder(image: np.ndarray, alpha: np.ndarray, rng: np.random.Generator,
                 pool: backgrounds_lib.Backgrounds) -> tuple[np.ndarray, bool]:
  """Pastes a textured rectangle over 25-50% of the object's box from a random side.

  Returns the new uint8 image and whether it hides at least 5% of the object.
  """
  box = mask_bbox(alpha)
  size = image.shape[0]
  y0, x0, y1, x1 = (int(round(v * size)) for v in (box.ymin, box.xmin, box.ymax, box.xmax))
  cover = rng.uniform(0.25, 0.5)
  side = int(rng.integers(4))
  if side == 0:
    x1 = x0 + int((x1 - x0) * cover)
  elif side == 1:
    x0 = x1 - int((x1 - x0) * cover)
  elif side == 2:
    y1 = y0 + int((y1 - y0) * cover)
  else:
    y0 = y1 - int((y1 - y0) * cover)
  mask = np.zeros(alpha.shape, bool)
  mask[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = True
  out = np.where(mask[..., None], pool.sample(rng, size), image)
  return out, float((alpha * mask).sum()) >= 0.05 * float(alpha.sum())


def png_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, "PNG", compress_level=3)  # 2x faster than 6, +7% size.
  return buffer.getvalue()


def stretch_factors(rng: np.random.Generator, stretch: float) -> np.ndarray | None:
  """``[3]`` factors along the object's x, y, z, each log-uniform in ``[1 / (1 + stretch),
  1 + stretch]``; None for ``stretch == 0`` (no random numbers drawn)."""
  if stretch == 0:
    return None
  if not 0 < stretch <= 0.35:
    raise ValueError(f"train_shape_stretch {stretch} must be in [0, 0.35] (the renderer's "
                     "clipping planes hold a mesh stretched by at most 1.35).")
  return np.exp(rng.uniform(-np.log1p(stretch), np.log1p(stretch), size=3))


class ViewRenderer:
  """Renders the examples of one shape after another (one pybullet client)."""

  _MAX_TRIES = 5
  _NUM_SWAP_TEXTURES = 4

  def __init__(self, config: SyntheticViewsConfig, pool: backgrounds_lib.Backgrounds):
    self._config, self._pool = config, pool
    self._renderer = renderer_lib.Renderer(config.image_size)
    self._points = np.zeros((0, 3), np.float32)
    self._swaps: list[int] = []

  def __enter__(self) -> ViewRenderer:
    return self

  def __exit__(self, *exc) -> None:
    self._renderer.close()

  def load(self, mesh: renderer_lib.TexturedMesh, rng: np.random.Generator) -> None:
    """Loads a normalised mesh, samples its surface and uploads textures for swaps."""
    self._renderer.load(mesh)
    self._points = shapes.sample_surface_points(
        mesh.surface(), 4 * self._config.num_points, seed=int(rng.integers(2**31)))
    self._swaps = [self._renderer.load_texture(self._pool.sample(rng, 128))
                   for _ in range(self._NUM_SWAP_TEXTURES)]

  def _swap_looks(self, rng: np.random.Generator) -> None:
    for index in range(self._renderer.num_parts):
      if rng.random() < 0.7 and self._renderer.part_has_uvs(index):
        self._renderer.set_look(index, texture_id=self._swaps[int(rng.integers(len(self._swaps)))])
      elif rng.random() < 0.7:
        self._renderer.set_look(index, color=tuple(rng.uniform(0.1, 1.0, 3)))

  def _render(self, rng: np.random.Generator, points: np.ndarray, scale: np.ndarray | None):
    for _ in range(self._MAX_TRIES):
      viewpoint = sample_viewpoint(rng)
      distance = float(np.exp(rng.uniform(np.log(2.5), np.log(8.0))))
      window = crop_window(points, viewpoint, distance, rng)
      swap = rng.random() < self._config.texture_swap_probability
      if swap:
        self._swap_looks(rng)
      rendering = self._renderer.render(viewpoint, distance, window,
                                        renderer_lib.random_lighting(rng), object_scale=scale)
      if swap:
        self._renderer.restore_looks()
      if rendering.alpha.max() >= 0.5:
        return viewpoint, rendering
    raise EmptyRenderError(f"the object covered no pixel in {self._MAX_TRIES} random views.")

  def example(self, rng: np.random.Generator, stretch: float = 0.0) -> dict:
    """One example of the loaded shape (all features but category, object_id and shape_id),
    stretched along its axes as ``stretch_factors(rng, stretch)`` says; its points are the
    stretched surface, back in the unit sphere."""
    config = self._config
    scale = stretch_factors(rng, stretch)
    points = self._points
    if scale is not None:
      points = points * scale
      points = points / np.linalg.norm(points, axis=1).max()
    viewpoint, rendering = self._render(rng, points, scale)
    image = rendering.composite(self._pool.sample(rng, config.image_size))
    occluded = False
    if rng.random() < config.occluder_probability:
      image, occluded = add_occluder(image, rendering.alpha, rng, self._pool)
    points = points[rng.choice(len(points), config.num_points, replace=False)]
    return {"image": png_bytes(image), "bbox": mask_bbox(rendering.alpha), "viewpoint": viewpoint,
            "points": points.astype(np.float32), "truncated": False, "occluded": occluded,
            "difficult": False, "has_keypoints": True}


class SyntheticViews(tfds.core.GeneratorBasedBuilder):
  """Renders of real meshes with exact viewpoints on real photo backgrounds."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "2.0.0": "Aircraft, ships and cars from FlightGear, CRRCSim and TORCS; ships, siege "
               "engines, helmets and shields from 0 A.D.; val and test hold disjoint shapes "
               "(5+ test shapes per evaluated category); shape_id; category_symmetry."}
  BUILDER_CONFIGS = [
      SyntheticViewsConfig(
          name="small", description="Default: the Debian mesh sources, 128 px, 16 views of each "
          "train shape.", train_views=16),
      SyntheticViewsConfig(
          name="small_unstretched", description="`small` without the train shapes' stretching "
          "(its ablation).", train_views=16, train_shape_stretch=0.0),
      SyntheticViewsConfig(
          name="large", description="The Debian mesh sources, 224 px, 120 views of each train "
          "shape (GPU runs).",
          image_size=224, train_views=120, val_views=24, test_views=36),
      SyntheticViewsConfig(
          name="tiny", description="Primitives on procedural backgrounds, 64 px (tests, CI).",
          mesh_sources=("primitives",), background_source="procedural", image_size=64,
          num_points=256, train_views=10, val_views=4, test_views=4, min_test_shapes=1,
          min_val_shapes=1, min_train_shapes=1, primitives_per_category=4, num_workers=1),
  ]
  DEFAULT_CONFIG_NAME = "small"

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    size = config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__.split("\n\n")[0],
        features=features.example_features(
            category_names(config), num_points=config.num_points, image_shape=(size, size, 3)),
        metadata=tfds.core.MetadataDict({
            features.NOVEL_CATEGORIES_KEY: list(novel_categories(config)),
            features.CATEGORY_SYMMETRY_KEY: dict(category_symmetry(config)),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: meshes and photos are local packages.
    config = self.builder_config
    renderer_lib.Renderer(8).close()  # fails now, with an install hint, if pybullet is missing.
    shapes_per_split, novel = split_shapes(list_shapes(config), config, novel_categories(config))
    background_pool = backgrounds_lib.load_backgrounds(
        config.background_source, furniture_dir=config.furniture_dir)
    self.info.metadata.update({
        "background_source": background_pool.source,
        features.NOVEL_CATEGORIES_KEY: list(novel),
        **{f"{split}_shapes": len(refs) for split, refs in shapes_per_split.items()}})
    views = {"train": config.train_views, "val": config.val_views, "test": config.test_views}
    return {split: self._generate_examples(split, shapes_per_split[split], views[split],
                                           background_pool)
            for split in SPLITS}

  def _generate_examples(self, split: str, refs: list[ShapeRef], num_views: int,
                         background_pool: backgrounds_lib.Backgrounds):
    config = self.builder_config
    skipped = self.info.metadata.setdefault("skipped_models", [])
    # Each shape has its own seed, so the examples do not depend on the number of workers.
    jobs = [(ref, [config.seed, SPLITS.index(split), int(stable_fraction(ref.object_id) * 2**32)],
             num_views, config.train_shape_stretch if split == "train" else 0.0) for ref in refs]
    with _shape_renderers(config, background_pool) as render_all:
      results = tqdm.tqdm(render_all(jobs), total=len(jobs), desc=f"Rendering {split}",
                          unit="shape")
      for ref, (examples, error) in zip(refs, results, strict=True):
        if error is not None:
          logging.warning("Skipping model %s (%s) in %s: %s", ref.object_id, ref.category, split,
                          error)
          if ref.object_id not in skipped:
            skipped.append(ref.object_id)
          continue
        for index, example in enumerate(examples):
          example.update(category=ref.category, object_id=f"{ref.object_id}/{split}/{index}",
                         shape_id=ref.object_id)
          yield example["object_id"], example


def _render_shape(views: ViewRenderer, job) -> tuple[list[dict] | None, str | None]:
  """Renders the views of one shape: (examples, None), or (None, why) for a broken model."""
  ref, seed, num_views, stretch = job
  rng = np.random.default_rng(seed)
  try:
    views.load(ref.load(), rng)
    return [views.example(rng, stretch) for _ in range(num_views)], None
  except Exception as e:  # noqa: BLE001 (any model that raises is skipped and counted)
    return None, f"{type(e).__name__}: {e}"


_WORKER_VIEWS: ViewRenderer | None = None  # the renderer of a worker process.


def _start_worker(config: SyntheticViewsConfig, pool: backgrounds_lib.Backgrounds) -> None:
  global _WORKER_VIEWS
  _WORKER_VIEWS = ViewRenderer(config, pool)  # freed when the worker process exits.


def _worker_render_shape(job):
  return _render_shape(_WORKER_VIEWS, job)


@contextlib.contextmanager
def _shape_renderers(config: SyntheticViewsConfig, pool: backgrounds_lib.Backgrounds):
  """Yields ``render_all(jobs) -> iterator of _render_shape results, in order``: in this process,
  or in ``config.num_workers`` spawned processes (None: one per CPU core)."""
  workers = config.num_workers or os.cpu_count() or 1
  if workers <= 1:
    with ViewRenderer(config, pool) as views:
      yield functools.partial(map, functools.partial(_render_shape, views))
    return
  yield functools.partial(_render_in_processes, config, pool, workers)


def _render_in_processes(config: SyntheticViewsConfig, pool: backgrounds_lib.Backgrounds,
                         workers: int, jobs) -> Iterator[tuple[list[dict] | None, str | None]]:
  """``_render_shape`` of each job in ``workers`` processes, in job order, with at most two jobs
  per worker in flight (memory stays flat). When a worker dies (a pybullet crash), the job it
  held is retried alone in a fresh process, and reported as skipped if that one dies too."""
  context = multiprocessing.get_context("spawn")  # no fork of a process holding TF threads.

  def start(size: int) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        size, mp_context=context, initializer=_start_worker, initargs=(config, pool))

  executor, queue, remaining = start(workers), collections.deque(), iter(jobs)
  try:
    while True:
      while len(queue) < 2 * workers and (job := next(remaining, None)) is not None:
        queue.append((job, executor.submit(_worker_render_shape, job)))
      if not queue:
        return
      job, future = queue.popleft()
      try:
        result = future.result()
      except concurrent.futures.process.BrokenProcessPool:
        executor.shutdown(cancel_futures=True)
        with start(1) as alone:
          try:
            result = alone.submit(_worker_render_shape, job).result()
          except concurrent.futures.process.BrokenProcessPool:
            result = None, "the rendering process died (twice) on this model"
        executor = start(workers)
        queue = collections.deque((j, executor.submit(_worker_render_shape, j)) for j, _ in queue)
      yield result
  finally:
    executor.shutdown(cancel_futures=True)
