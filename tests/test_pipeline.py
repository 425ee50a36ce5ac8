"""The host input pipeline: deterministic order, process slices, padding, eval layout."""

import numpy as np
import pytest

from kdpose.data import pipeline


def _record(i, height=6, width=8):
  image = np.full((height, width, 3), i, np.uint8)
  return {"image": image, "bbox": np.array([0.25, 0.5, 0.75, 1.0], np.float32),
          "viewpoint": np.array([i, 0, 0], np.float32), "points": np.zeros((4, 3), np.float32),
          "category": i % 3, "object_id": f"obj{i}"}


def _data(num_records=10):
  source = [_record(i) for i in range(num_records)]
  indices = np.arange(num_records)
  return pipeline.SplitData(source=source, indices=indices, categories=indices.astype(str),
                            shape_ids=indices.astype(str), category_names=["a", "b", "c"],
                            category_symmetry=np.array([0, 2, 1], np.int32),
                            novel_categories=[], pad_size=10, num_points=4)


def test_train_positions_are_a_pure_function_of_seed_and_step():
  first = [pipeline.train_positions(s, 4, 10, seed=3) for s in range(5)]
  again = [pipeline.train_positions(s, 4, 10, seed=3) for s in range(5)]
  np.testing.assert_array_equal(first, again)
  # Each epoch of 10 records is a permutation: steps 0-1 and half of 2 cover every record once.
  epoch0 = np.concatenate(first)[:10]
  np.testing.assert_array_equal(np.sort(epoch0), np.arange(10))
  assert not np.array_equal(pipeline.train_positions(0, 4, 10, seed=4), first[0])


def test_resumed_iterator_yields_the_same_batches():
  loader = pipeline.BatchLoader(_data())
  full = list(pipeline.train_batches(loader, global_batch_size=4, seed=0, start_step=0,
                                     num_steps=6))
  resumed = list(pipeline.train_batches(loader, global_batch_size=4, seed=0, start_step=3,
                                        num_steps=6))
  loader.close()
  assert len(full) == 6 and len(resumed) == 3
  for a, b in zip(full[3:], resumed, strict=True):
    np.testing.assert_array_equal(a["viewpoint"], b["viewpoint"])


def test_processes_split_each_global_batch():
  loader = pipeline.BatchLoader(_data())
  whole = next(pipeline.train_batches(loader, global_batch_size=4, seed=0, start_step=0,
                                      num_steps=1))
  parts = [next(pipeline.train_batches(loader, global_batch_size=4, seed=0, start_step=0,
                                       num_steps=1, process_index=p, process_count=2))
           for p in range(2)]
  loader.close()
  np.testing.assert_array_equal(
      np.concatenate([p["viewpoint"] for p in parts]), whole["viewpoint"])


def test_example_arrays_pad_and_convert_the_box_to_pixels():
  arrays = pipeline.example_arrays(_record(7), pad_size=10)
  assert arrays["image"].shape == (10, 10, 3)
  assert arrays["image"][5, 7, 0] == 7 and arrays["image"][6, 0, 0] == 0  # padding is zero
  np.testing.assert_allclose(arrays["box"], [4.0, 1.5, 8.0, 4.5])  # x1, y1, x2, y2 pixels
  with pytest.raises(ValueError, match="larger than pad_size 4"):
    pipeline.example_arrays(_record(1), pad_size=4)


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_record_once(process_count):
  loader = pipeline.BatchLoader(_data(7))
  per_process = [list(pipeline.eval_batches(loader, global_batch_size=4, process_index=p,
                                            process_count=process_count))
                 for p in range(process_count)]
  loader.close()
  # Gathered over processes (concatenated along the batch), record k is row k.
  rows = np.concatenate([np.concatenate([batches[b]["viewpoint"][:, 0] for batches in per_process])
                         for b in range(2)])
  valid = np.concatenate([np.concatenate([batches[b]["valid"] for batches in per_process])
                          for b in range(2)])
  np.testing.assert_array_equal(rows[valid], np.arange(7))
  assert valid.sum() == 7 and not valid[7]
