"""tools/benchmark.py: its collective accounting on a program of known traffic, and a whole run
of the tool on the tiny config with the training stack hidden (it must need only jax, flax,
optax, numpy and ml_collections)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from kdpose import sharding
from tools import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_collective_bytes_counts_the_all_gather_and_the_all_reduce_of_a_known_program():
  mesh = sharding.make_mesh()
  assert mesh.devices.size == 8
  x = jax.device_put(jnp.ones((64, 16), jnp.float32), sharding.batch_sharding(mesh))
  replicated = NamedSharding(mesh, PartitionSpec())
  # Replicating a batch-sharded [64, 16] gathers all of it; a sum over the batch all-reduces
  # one [16] vector.
  program = jax.jit(lambda x: (2 * x, x.sum(0)), out_shardings=(replicated, replicated))
  found = benchmark.collective_bytes(program.lower(x).compile().as_text())
  assert found == {"all-gather": {"count": 1, "bytes": 64 * 16 * 4, "in_loop": 0},
                   "all-reduce": {"count": 1, "bytes": 16 * 4, "in_loop": 0}}


def test_collective_bytes_counts_every_element_of_a_combined_tuple_and_flags_loops():
  # XLA combines gradient all-reduces into tuple ops whose shapes carry /*index=N*/ marks (the
  # first count missed them); a collective in a while body runs once per iteration.
  hlo = (
      "  %all-reduce.7 = (f32[240]{0}, f32[8,2]{1,0}, f32[1]{0}, f32[1]{0}, f32[1]{0}, "
      "/*index=5*/bf16[4]{0}) all-reduce(%a, %b, %c, %d, %e, /*index=5*/%f), channel_id=3, "
      'metadata={op_name="jit(step)/transpose(jvp(M))/dense/dot_general"}\n'
      "  %all-gather.2 = f32[4,8,3]{2,1,0} all-gather(%g), dimensions={1}, "
      'metadata={op_name="jit(step)/transpose(jvp(M))/conv/while/body/dynamic_slice"}\n'
      "  %add.1 = f32[3]{0} add(%h, %i)\n")
  assert benchmark.collective_bytes(hlo) == {
      "all-reduce": {"count": 1, "bytes": 4 * (240 + 16 + 3) + 2 * 4, "in_loop": 0},
      "all-gather": {"count": 1, "bytes": 4 * 4 * 8 * 3, "in_loop": 1}}


def test_the_benchmark_runs_without_the_training_stack(tmp_path, without_training_stack):
  out = tmp_path / "benchmark.json"
  args = ["tools/benchmark.py", "--config", "configs/default.py:tiny", "--steps", "2",
          "--only", "student_kd,student_baseline,predictor",
          "--rounds", "1", "--warmup", "0", "--matmul_size", "256", "--collectives",
          "--json", str(out)]
  code = without_training_stack + (
      f"import runpy\nsys.argv = {args!r}\nrunpy.run_path('tools/benchmark.py', "
      "run_name='__main__')\n")
  result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  # (--only leaves out the teacher step, the slowest to compile; the others show it is timed.)
  assert set(report["steps"]) == {"student_kd", "student_baseline", "predictor"}
  for name, row in report["steps"].items():
    assert row["timed_steps"] == 2, name
    assert 0 < row["min_ms"] <= row["median_ms"] <= row["max_ms"], name
    assert row["gflop_per_step"] > 0 and row["peak_mib"] > 0, name
  # The tiny config's batch of 16 on the 8 test devices: the KD step gathers the teacher's
  # embeddings across devices, so it has an all-gather the baseline step lacks.
  assert "all-gather" in report["collectives"]["student_kd"]
  assert report["collectives"]["student_baseline"]["all-reduce"]["bytes"] > 0
  # The baseline step's cross-device traffic is the reduction of gradients and BatchNorm
  # moments, plus the batch's 16 training errors gathered for their median (the shifted
  # depthwise kernel gradient once gathered every activation).
  assert report["collectives"]["student_baseline"]["all-gather"]["bytes"] == 16 * 4
  assert report["kd_over_baseline"] > 0
