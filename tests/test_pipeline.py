"""The host input pipeline: deterministic order, process slices, padding, eval layout, and the
same batches however many grain threads or worker processes read them."""

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from kdpose.data import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


class _SlowSource(list):
  """Records that take a random while to read: with threads, reads finish out of order."""

  def __getitem__(self, i):
    time.sleep(np.random.default_rng(i).uniform(0, 0.01))
    return super().__getitem__(i)


def _expected(data, step, batch_size=4):
  """The batch of ``step`` as ``train_positions`` says, read one record at a time."""
  records = data.indices[pipeline.train_positions(step, batch_size, len(data.indices), seed=5)]
  examples = [pipeline.example_arrays(data.source[int(i)], data.pad_size) for i in records]
  batch = {key: np.stack([e[key] for e in examples]) for key in examples[0]}
  return batch | {"symmetry": data.category_symmetry[batch["category"]],
                  "index": records.astype(np.int32)}


@pytest.mark.parametrize("num_threads, prefetch", [(0, None), (1, 1), (3, None), (4, 6)])
def test_loader_yields_the_batches_of_the_positions_in_order(num_threads, prefetch):
  data = _data(10)
  data = pipeline.SplitData(**{**data.__dict__, "source": _SlowSource(data.source),
                               "indices": np.arange(10)[::-1].copy()})  # record != position
  loader = pipeline.BatchLoader(data, num_threads=num_threads, prefetch=prefetch)
  batches = list(pipeline.train_batches(loader, global_batch_size=4, seed=5, start_step=2,
                                        num_steps=9))
  loader.close()
  assert len(batches) == 7
  for step, batch in enumerate(batches, start=2):
    expected = _expected(data, step)
    assert batch.keys() == expected.keys()
    for key in expected:
      np.testing.assert_array_equal(batch[key], expected[key], err_msg=f"step {step} {key}")


def test_a_failing_load_surfaces_at_its_batch_after_the_ones_before(monkeypatch):
  original, calls, lock = pipeline.BatchLoader._load, {"n": 0}, threading.Lock()

  def failing_load(self, positions):  # the batch of step 3 fails, whichever thread reads it
    with lock:
      calls["n"] += 1
    if np.array_equal(positions, pipeline.train_positions(3, 4, 10, seed=0)):
      raise KeyboardInterrupt("killed")
    return original(self, positions)

  monkeypatch.setattr(pipeline.BatchLoader, "_load", failing_load)
  loader = pipeline.BatchLoader(_data(), num_threads=3)
  batches = pipeline.train_batches(loader, global_batch_size=4, seed=0, start_step=0,
                                   num_steps=8)
  received = [next(batches) for _ in range(3)]
  with pytest.raises(KeyboardInterrupt, match="killed"):
    next(batches)
  loader.close()
  assert len(received) == 3 and calls["n"] >= 4


def test_bad_loader_counts_and_workers_outside_absl_are_refused():
  with pytest.raises(ValueError, match="num_threads=-1 and num_workers=0 must be >= 0"):
    pipeline.BatchLoader(_data(), num_threads=-1)
  # pytest parses no absl flags: grain's workers would each die reading one.
  with pytest.raises(ValueError, match=r"num_workers=2 needs absl flags parsed \(run under "
                     "absl.app.run"):
    pipeline.BatchLoader(_data(), num_workers=2)


_WORKERS_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from absl import app
    sys.path.insert(0, "tests")
    import test_pipeline
    from kdpose.data import pipeline

    def main(argv):
      data = test_pipeline._data(10)
      batches = {}
      for workers, threads in ((0, 4), (3, 2)):  # 3 workers: 3 + 3 + 2 batches
        loader = pipeline.BatchLoader(data, num_threads=threads, num_workers=workers)
        batches[workers] = list(pipeline.train_batches(
            loader, global_batch_size=4, seed=1, start_step=1, num_steps=9, process_index=1,
            process_count=2))
        loader.close()
      assert len(batches[3]) == 8, len(batches[3])
      for step, (a, b) in enumerate(zip(batches[0], batches[3], strict=True)):
        for key in a:
          np.testing.assert_array_equal(a[key], b[key], err_msg=f"step {step} {key}")
      print("same batches")

    app.run(main)
    """)


def test_worker_processes_yield_the_same_batches_as_threads():
  # Workers are spawned processes that read absl flags: a program under absl.app.run.
  result = subprocess.run([sys.executable, "-c", _WORKERS_SCRIPT], cwd=REPO, text=True,
                          capture_output=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0 and "same batches" in result.stdout, result.stderr[-3000:]
