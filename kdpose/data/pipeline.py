"""The host input pipeline: random-access TFDS sources -> fixed-shape numpy batches.

Training order is a pure function of (seed, step): global step ``s`` takes positions
``[s * B, (s + 1) * B)`` of an endless stream of per-epoch permutations seeded by (seed, epoch).
So a resumed run sees exactly the batches it would have seen, and no iterator state needs saving.
Each process loads only its slice of every global batch (multi-host).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import grain
import numpy as np
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import ConfigDict
from tensorflow_datasets.proto import tf_example_pb2

from kdpose import geometry
from kdpose.data import features as features_lib

# Per-record flags the filters read, all bools in every kdpose dataset.
_FLAGS = ("truncated", "occluded", "difficult", "has_keypoints")


@dataclasses.dataclass(frozen=True)
class SplitData:
  """The records of one split that pass its filters.

  Attributes:
    source: random-access TFDS data source of the split.
    indices: ``[n]`` record indices kept.
    categories: ``[n]`` category names of the kept records.
    shape_ids: ``[n]`` shape (mesh or CAD model) names of the kept records.
    category_names: all category names of the dataset.
    category_symmetry: ``[num_categories]`` int32 symmetry code of each category
      (``geometry.SYMMETRY_NAMES``).
    novel_categories: categories the dataset holds out of training.
    pad_size: images are zero-padded at the bottom/right to ``[pad_size, pad_size, 3]``.
    num_points: points stored per example.
  """

  source: Sequence
  indices: np.ndarray
  categories: np.ndarray
  shape_ids: np.ndarray
  category_names: list[str]
  category_symmetry: np.ndarray
  novel_categories: list[str]
  pad_size: int
  num_points: int


def _metadata_list(info: tfds.core.DatasetInfo, key: str) -> list[str]:
  return list((info.metadata or {}).get(key, []))


def category_symmetry_codes(info: tfds.core.DatasetInfo) -> np.ndarray:
  """``[num_categories]`` int32 symmetry codes from the builder's ``category_symmetry``."""
  names = info.features["category"].names
  symmetry = dict((info.metadata or {}).get(features_lib.CATEGORY_SYMMETRY_KEY, {}))
  unknown = sorted(set(symmetry) - set(names))
  bad = sorted(k for k, v in symmetry.items() if v not in geometry.SYMMETRY_NAMES)
  if unknown or bad:
    raise ValueError(f"Dataset {info.full_name}: category_symmetry names unknown categories "
                     f"{unknown} or symmetries {bad} outside {geometry.SYMMETRY_NAMES}.")
  return np.array([geometry.SYMMETRY_NAMES.index(symmetry.get(n, "none")) for n in names],
                  np.int32)


def _pad_size(info: tfds.core.DatasetInfo, config: ConfigDict) -> int:
  """Fixed image shape of the dataset, else the configured ``pad_size``."""
  height, width, _ = info.features["image"].shape
  if height and width:
    return max(height, width)
  if not config.pad_size:
    raise ValueError(f"Dataset {config.name} has images of varying size: set "
                     "config.dataset.pad_size to their longest side.")
  return config.pad_size


def scan_fields(builder: tfds.core.DatasetBuilder, split: str, names: Sequence[str],
                read_size: int = 1024) -> dict[str, np.ndarray]:
  """``name -> [num_records]`` of the scalar features ``names`` of every record of ``split``
  (int64 for ints, bools and class labels, bytes for text), read from the serialized
  ``tf.train.Example`` protos without decoding the rest of the record (image, points)."""
  raw = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  values = {name: [] for name in names}
  for start in range(0, len(raw), read_size):
    for record in raw.__getitems__(range(start, min(start + read_size, len(raw)))):
      feature = tf_example_pb2.Example.FromString(record).features.feature
      for name in names:
        kind = feature[name].WhichOneof("kind")
        if kind not in ("int64_list", "bytes_list"):
          raise ValueError(f"{builder.info.full_name}/{split}: feature {name!r} is stored as "
                           f"{kind}, not a scalar int or text.")
        values[name].append(getattr(feature[name], kind).value[0])
  return {name: np.array(v) for name, v in values.items()}


def load_split(builder: tfds.core.DatasetBuilder, split: str, config: ConfigDict, *,
               exclude_categories: Sequence[str] = (), filters: ConfigDict | dict = ()
               ) -> SplitData:
  """Opens ``split`` and keeps the records that pass ``filters`` (drop_difficult,
  drop_truncated, drop_occluded, require_keypoints) and are not in ``exclude_categories``."""
  info = builder.info
  if split not in info.splits:
    raise KeyError(f"Dataset {config.name} has no split {split!r}; it has {list(info.splits)}.")
  names = info.features["category"].names
  fields = scan_fields(builder, split, (*_FLAGS, "category", "shape_id"))
  keep = np.ones(len(fields["category"]), bool)
  filters = dict(filters)
  for flag, drop_if in (("difficult", True), ("truncated", True), ("occluded", True),
                        ("has_keypoints", False)):
    option = "require_keypoints" if flag == "has_keypoints" else f"drop_{flag}"
    if filters.get(option):
      keep &= fields[flag].astype(bool) != drop_if
  categories = np.array(names)[fields["category"].astype(np.int64)]
  keep &= ~np.isin(categories, list(exclude_categories))
  indices = np.flatnonzero(keep)
  if indices.size == 0:
    raise ValueError(f"No records left in {config.name}/{split} after filters {filters} and "
                     f"excluding {list(exclude_categories)}.")
  return SplitData(
      source=builder.as_data_source(split), indices=indices, categories=categories[indices],
      shape_ids=np.char.decode(fields["shape_id"][indices].astype(bytes), "utf-8"),
      category_names=list(names), category_symmetry=category_symmetry_codes(info),
      novel_categories=_metadata_list(info, features_lib.NOVEL_CATEGORIES_KEY),
      pad_size=_pad_size(info, config), num_points=info.features["points"].shape[0])


def example_arrays(example: dict, pad_size: int) -> dict[str, np.ndarray]:
  """One decoded record -> fixed-shape arrays.

  Returns image uint8 ``[S, S, 3]`` (zero-padded bottom/right), box float32 ``[4]`` = (x1, y1,
  x2, y2) in pixels of that image, viewpoint float32 ``[3]`` degrees, points float32 ``[N, 3]``,
  category int32. (``BatchLoader`` adds ``symmetry`` and ``index``.)
  """
  image = np.asarray(example["image"])
  if image.ndim == 2 or image.shape[-1] == 1:
    image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=-1)
  height, width = image.shape[:2]
  if height > pad_size or width > pad_size:
    raise ValueError(f"Image {example.get('object_id')!r} is {height}x{width}, larger than "
                     f"pad_size {pad_size}.")
  padded = np.zeros((pad_size, pad_size, 3), np.uint8)
  padded[:height, :width] = image
  ymin, xmin, ymax, xmax = np.asarray(example["bbox"], np.float32)
  return {
      "image": padded,
      "box": np.array([xmin * width, ymin * height, xmax * width, ymax * height], np.float32),
      "viewpoint": np.asarray(example["viewpoint"], np.float32),
      "points": np.asarray(example["points"], np.float32),
      "category": np.int32(example["category"]),
  }


def _stack(examples: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def train_positions(step: int, global_batch_size: int, num_records: int, seed: int
                    ) -> np.ndarray:
  """``[global_batch_size]`` positions into the kept records for global step ``step``."""
  stream = np.arange(step * global_batch_size, (step + 1) * global_batch_size)
  epochs, within = np.divmod(stream, num_records)
  positions = np.empty_like(stream)
  for epoch in np.unique(epochs):
    permutation = np.random.default_rng([seed, int(epoch)]).permutation(num_records)
    positions[epochs == epoch] = permutation[within[epochs == epoch]]
  return positions


class BatchLoader:
  """Loads host batches with grain: a ``MapDataset`` with one element per position array, read
  by ``num_threads`` threads (PNG decoding releases the GIL), ``prefetch`` batches ahead, in
  each of ``num_workers`` processes when > 0 (they need absl flags parsed: ``kdpose.main``).

  Batches come in the order of the position arrays, however many threads or workers read them
  (workers take every ``num_workers``-th batch; grain interleaves them back in turn). A batch
  holds ``example_arrays``' arrays stacked, the category's int32 ``symmetry [b]`` and the int32
  ``index [b]`` of each record in the split (not a model input).
  """

  def __init__(self, data: SplitData, *, num_threads: int = 4, num_workers: int = 0,
               prefetch: int | None = None):
    if num_threads < 0 or num_workers < 0 or (prefetch is not None and prefetch < 1):
      raise ValueError(f"BatchLoader: num_threads={num_threads} and num_workers={num_workers} "
                       f"must be >= 0, prefetch={prefetch} >= 1 (or None: one per thread).")
    if num_workers and not flags.FLAGS.is_parsed():
      # Else each worker dies on grain's first flag read (UnparsedFlagAccessError).
      raise ValueError(f"BatchLoader: num_workers={num_workers} needs absl flags parsed (run "
                       "under absl.app.run, as kdpose.main does); use 0 workers (threads "
                       "only, config.dataset.loader_workers=0) when calling the library.")
    self.data = data
    self.num_threads, self.num_workers = num_threads, num_workers
    # A batch is read by one thread: fewer batches in flight than threads would idle some.
    self.prefetch = max(num_threads, 1) if prefetch is None else prefetch
    self._iterators: list[grain.DatasetIterator] = []

  def __getstate__(self) -> dict:
    # Workers get the loader (its ``_load``) pickled, without the parent's open iterators.
    return {**self.__dict__, "_iterators": []}

  def _load(self, positions: np.ndarray) -> dict[str, np.ndarray]:
    """The batch of ``positions`` (into the kept records), read in the calling thread."""
    records = self.data.indices[positions]
    batch = _stack([example_arrays(self.data.source[int(i)], self.data.pad_size)
                    for i in records])
    batch["symmetry"] = self.data.category_symmetry[batch["category"]]
    batch["index"] = records.astype(np.int32)  # what was read, for evaluation and for logs
    return batch

  def iterate(self, positions_per_batch: Sequence[np.ndarray]
              ) -> Iterator[dict[str, np.ndarray]]:
    """Yields the batch of each position array in turn, reading up to ``prefetch`` batches
    ahead (in each worker process when there are workers); ``positions_per_batch[i]`` is
    indexed only when batch ``i`` is read, so it may compute its arrays lazily."""
    dataset = grain.MapDataset.source(positions_per_batch).map(self._load)
    batches = dataset.to_iter_dataset(grain.ReadOptions(
        num_threads=self.num_threads, prefetch_buffer_size=self.prefetch))
    if self.num_workers:
      batches = batches.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
    iterator = iter(batches)
    self._iterators.append(iterator)
    return iterator

  def close(self) -> None:
    """Stops the threads and worker processes of every iterator this loader made."""
    for iterator in self._iterators:
      iterator.close()
    self._iterators.clear()


def training_loader(data: SplitData, dataset: ConfigDict) -> BatchLoader:
  """The loader of training batches with the threads and workers of ``config.dataset``."""
  return BatchLoader(data, num_threads=dataset.loader_threads, num_workers=dataset.loader_workers)


def _process_slice(positions: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  per_process = len(positions) // process_count
  return positions[process_index * per_process:(process_index + 1) * per_process]


@dataclasses.dataclass(frozen=True)
class TrainPositions(Sequence):
  """This process's slice of the positions of global steps [start_step, num_steps): item ``i``
  is step ``start_step + i`` (``train_positions``), computed when read."""

  global_batch_size: int
  num_records: int
  seed: int
  start_step: int
  num_steps: int
  process_index: int = 0
  process_count: int = 1

  def __len__(self) -> int:
    return max(0, self.num_steps - self.start_step)

  def __getitem__(self, i: int) -> np.ndarray:
    if not 0 <= i < len(self):
      raise IndexError(f"TrainPositions: item {i} of {len(self)}.")
    positions = train_positions(self.start_step + i, self.global_batch_size, self.num_records,
                                self.seed)
    return _process_slice(positions, self.process_index, self.process_count)


def train_batches(loader: BatchLoader, *, global_batch_size: int, seed: int, start_step: int,
                  num_steps: int, process_index: int = 0, process_count: int = 1
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's slices of the global training batches of steps [start_step, num_steps)."""
  return loader.iterate(TrainPositions(global_batch_size, len(loader.data.indices), seed,
                                       start_step, num_steps, process_index, process_count))


def eval_batches(loader: BatchLoader, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Every kept record once, in order; the last batch is padded (with record 0) and the bool
  ``valid`` marks real rows. Concatenated in process order, row ``k`` of batch ``b`` is kept
  record ``b * global_batch_size + k`` (``index``: each row's record, in whatever order)."""
  num_records = len(loader.data.indices)
  num_batches = -(-num_records // global_batch_size)
  stream = np.arange(num_batches * global_batch_size).reshape(num_batches, global_batch_size)
  stream = _process_slice(stream.T, process_index, process_count).T  # this process's columns
  valid = stream < num_records
  positions = np.where(valid, stream, 0)
  for batch, valid_rows in zip(loader.iterate(positions), valid, strict=True):
    batch["valid"] = valid_rows
    yield batch
