r"""kdpose's steps timed as training runs them, against a matmul peak measured in the same run.

  python tools/benchmark.py --config configs/default.py --json tools/results/benchmark.json
  python tools/benchmark.py --config configs/default.py --peer --peer_python /path/to/torch/python
  python tools/benchmark.py --config configs/default.py --input_pipeline   # needs the dataset
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tools/benchmark.py --collectives

Times the jitted teacher step, the contrastive-KD student step, the baseline student step (every
KD weight 0) and the image-only predictor (``inference.predict_crops`` on exact crops), each with
the trainer's shardings and donation, on a random batch of the config's shapes (``--batch``
overrides the stage batch sizes) and random weights (the same speed as pretrained ones). Per
step: median, min and max time over ``--rounds`` x ``--steps`` timed calls after compiling and
``--warmup`` untimed calls, images/s, XLA's FLOP count of the compiled step (cost analysis) and
the FLOP/s it reaches as a share of the float32 matmul peak timed here, and XLA's buffer sizes
(arguments + outputs + temporaries: the step's peak memory on the device). Needs only jax,
flax, optax, numpy and ml_collections, except:

- ``--peer``: alternates rounds of the baseline student step with rounds of its PyTorch peer
  (``tools/peer/student_step.py``, run by ``--peer_python``, with the config's encoder
  (EfficientNet-Lite0, ResNet-18 or ResNet-50), head widths, frozen stages, frozen BatchNorm and
  pooling grid), so a loaded machine slows both alike, and reports the
  images/s ratio kdpose / peer.
- ``--input_pipeline`` (TensorFlow, TFDS and the built dataset): the host batches/s of the
  training input pipeline against the baseline step's consumption, and the step rate fed by it
  against the rate on a batch already on the device.
- ``--collectives``: the bytes each collective of the compiled KD and baseline steps moves per
  step (all-gather of the KD negatives, all-reduce of the gradients), from the HLO; run with
  several devices (XLA_FLAGS above) for numbers that mean anything.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import common  # noqa: E402 (after the path)
from kdpose import augment, inference, sharding, stages, state  # noqa: E402
from tools.peer.batch import make_batch  # noqa: E402 (numpy only: both sides draw this batch)

FLAGS = flags.FLAGS
PEER = os.path.join(ROOT, "tools", "peer", "student_step.py")
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "s8": 1, "u8": 1, "pred": 1,
                "f64": 8, "s64": 8, "u64": 8}


class Timed:
  """A compiled step ``call() -> outputs`` with its compile seconds, FLOPs and buffer bytes."""

  def __init__(self, jitted, args: tuple, carry_state: bool):
    start = time.perf_counter()
    self.compiled = jitted.lower(*args).compile()
    self.compile_s = time.perf_counter() - start
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
    memory = self.compiled.memory_analysis()
    self.peak_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                       + memory.temp_size_in_bytes - memory.alias_size_in_bytes
                       ) if memory is not None else float("nan")
    self._args, self._carry = list(args), carry_state

  def __call__(self):
    outputs = self.compiled(*self._args)
    if self._carry:  # the train state is donated: the next call takes the new one
      self._args[0] = outputs[0]
    return jax.block_until_ready(outputs)

  def set_input(self, index: int, value) -> None:
    """Replaces the ``index``-th argument (e.g. the batch) of the next calls."""
    self._args[index] = value

  def timed_round(self, num_steps: int) -> list[float]:
    times = []
    for _ in range(num_steps):
      start = time.perf_counter()
      self()
      times.append(time.perf_counter() - start)
    return times


def _stage_config(config, batch_size: int):
  config = config.copy_and_resolve_references()
  for stage in ("teacher", "student"):
    config[stage].model.pretrained = ""  # random weights: the same speed, no weight file
    if batch_size:
      config[stage].batch_size = batch_size
  return config


def _device_batch(config, batch_size: int, mesh) -> dict[str, jax.Array]:
  host = make_batch(batch_size, FLAGS.source_size, FLAGS.stored_points)
  return sharding.host_to_global(host, mesh)


def _teacher_step(config, mesh, batch) -> Timed:
  """The teacher's jitted train step (``stages.teacher_train_step``) on a fresh state."""
  jitted, _, init_fn, _ = stages.teacher_train_step(config, mesh)
  train_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(0), mesh)
  return Timed(jitted, (train_state, batch, jax.random.key(1)), True)


def _student_step(config, mesh, batch, teacher=None, teacher_variables=None) -> Timed:
  """The student's jitted train step (``stages.student_train_step``) on a fresh state."""
  jitted, _, init_fn, _ = stages.student_train_step(config, mesh, teacher)
  train_state, _, _ = state.create_sharded_state(init_fn, jax.random.key(0), mesh)
  return Timed(jitted, (train_state, teacher_variables or {}, batch, jax.random.key(1)), True)


def _kd_student_step(config, mesh, batch) -> Timed:
  """The contrastive-KD student step, with a random-weight teacher of the config's shapes."""
  teacher_model, _, _, teacher_init = stages.build_teacher(config)
  teacher_variables = state.create_sharded_state(teacher_init, jax.random.key(0),
                                                 mesh)[0].variables()
  return _student_step(config, mesh, batch, teacher_model, teacher_variables)


def _predictor(config, mesh, batch) -> Timed:
  """The image-only predictor of an export: exact box crops -> viewpoints (flip test off)."""
  model, _, _, init_fn = stages.build_student(config)
  variables = state.create_sharded_state(init_fn, jax.random.key(0), mesh)[0].variables()
  crops = augment.crop_images(batch["image"], batch["box"], config.image_size)
  fn = jax.jit(functools.partial(inference.predict_crops, model, bin_size=config.bin_size))
  return Timed(fn, (variables, crops), False)


def baseline_config(config):
  """The same config with every KD weight 0 (the configs' ``baseline`` variant)."""
  return common.apply_variants(config.copy_and_resolve_references(), "baseline", shrink=None)


def matmul_peak(size: int, repeats: int = 5) -> float:
  """FLOP/s of a jitted float32 ``[size, size] @ [size, size]``: the best of ``repeats``."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, a))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, a))
    best = min(best, time.perf_counter() - start)
  return 2.0 * size**3 / best


def summarise(times: list[float], batch_size: int, flops: float, peak: float) -> dict:
  median = statistics.median(times)
  return {"median_ms": 1e3 * median, "min_ms": 1e3 * min(times), "max_ms": 1e3 * max(times),
          "images_per_s": batch_size / median, "timed_steps": len(times),
          "gflop_per_step": flops / 1e9, "gflop_per_s": flops / median / 1e9,
          "share_of_matmul_peak": flops / median / peak}


def collective_bytes(hlo_text: str) -> dict[str, dict[str, float]]:
  """kind -> {count, bytes, in_loop}: every collective op of an HLO module, its result's bytes
  (all the elements of a combined tuple op), and how many of them sit in a while loop's body
  (``in_loop``: they run once per iteration, so ``bytes`` undercounts what they move)."""
  found = {}
  pattern = re.compile(r"=\s*(\(?[a-z0-9]+\[[^=]*?)\s+(" + "|".join(COLLECTIVES) +
                       r")(?:-start)?\(")
  for line in hlo_text.splitlines():
    match = pattern.search(re.sub(r"/\*.*?\*/", "", line))  # tuples carry /*index=5*/ marks
    if not match:
      continue
    shapes = re.findall(r"([a-z0-9]+)\[([0-9,]*)\]", match.group(1))
    size = sum(_DTYPE_BYTES.get(dtype, 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
               for dtype, dims in shapes)
    entry = found.setdefault(match.group(2), {"count": 0, "bytes": 0, "in_loop": 0})
    entry["count"] += 1
    entry["bytes"] += size
    entry["in_loop"] += "/while/" in line
  return found


class Peer:
  """``tools/peer/student_step.py`` in a subprocess, warmed up, running a round on request."""

  def __init__(self, config, batch_size: int):
    encoder = config.student.model
    args = [FLAGS.peer_python, PEER, "--batch", str(batch_size), "--size",
            str(config.image_size), "--source_size", str(FLAGS.source_size), "--steps",
            str(FLAGS.steps), "--warmup", str(FLAGS.warmup), "--rounds", str(FLAGS.rounds),
            "--encoder", encoder.image_encoder, "--mlp_widths",
            ",".join(str(w) for w in encoder.mlp_widths), "--embedding_dim",
            str(encoder.embedding_dim), "--frozen_stages", str(encoder.get("frozen_stages", 0)),
            "--pool_grid", str(encoder.get("pool_grid", 1)), "--wait"]
    if encoder.get("frozen_norm", False):
      args.append("--frozen_norm")
    if encoder.dtype != "float32":
      raise ValueError(f"tools/benchmark.py --peer: the peer runs float32; the config's student "
                       f"is {encoder.dtype} (add --config.student.model.dtype=float32).")
    self.process = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True, bufsize=1)
    self.ready = self._line()

  def _line(self) -> dict:
    line = self.process.stdout.readline()
    if not line:
      raise RuntimeError(f"tools/benchmark.py: the peer ({FLAGS.peer_python} {PEER}) exited "
                         f"with {self.process.wait()} before answering; see its stderr above.")
    return json.loads(line)

  def timed_round(self) -> list[float]:
    self.process.stdin.write("go\n")
    self.process.stdin.flush()
    return self._line()["step_s"]

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def input_pipeline(config, mesh, timed: Timed, batch_size: int) -> dict:
  """Host batches/s of the training pipeline, and the baseline step's rate fed by it."""
  from kdpose.data import pipeline  # TensorFlow and TFDS: only for this measurement
  from kdpose.trainers import inputs

  train_data, _ = inputs.load_data(config)
  num_steps = FLAGS.rounds * FLAGS.steps
  loader = pipeline.training_loader(train_data, config.dataset)
  try:
    batches = pipeline.train_batches(loader, global_batch_size=batch_size, seed=0,
                                     start_step=0, num_steps=2 * num_steps + 1)
    next(batches)  # the pool's start-up
    start = time.perf_counter()
    for _ in range(num_steps):
      next(batches)
    host_s = (time.perf_counter() - start) / num_steps
    start = time.perf_counter()
    for _ in range(num_steps):
      batch = next(batches)
      # Not in make_batch's layout, which the step was compiled for (index is no step input;
      # category, an int32 [b], only feeds metrics): a pytree mismatch otherwise.
      del batch["index"], batch["category"]
      timed.set_input(2, sharding.host_to_global(batch, mesh))
      timed()
    fed_s = (time.perf_counter() - start) / num_steps
  finally:
    loader.close()
  return {"host_batches_per_s": 1 / host_s, "host_ms_per_batch": 1e3 * host_s,
          "fed_step_ms": 1e3 * fed_s}


def _environment() -> dict:
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 platform.machine())
  except OSError:
    cpu = platform.machine()
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "devices": jax.device_count(), "processes": jax.process_count(),
          "cpus": len(os.sched_getaffinity(0)), "cpu": cpu, "python": sys.version.split()[0]}


def markdown(report: dict) -> str:
  rows = [f"| {name} | {r['batch']} | {r['median_ms']:.0f} [{r['min_ms']:.0f}, {r['max_ms']:.0f}]"
          f" | {r['images_per_s']:.1f} | {r['gflop_per_step']:.1f} | {r['gflop_per_s']:.1f} | "
          f"{100 * r['share_of_matmul_peak']:.0f}% | {r['peak_mib']:.0f} | {r['compile_s']:.0f} |"
          for name, r in report["steps"].items()]
  env, lines = report["environment"], []
  lines += [f"# {report['command']}", "",
            f"{env['devices']} {env['backend']} device(s), {env['cpus']} CPUs ({env['cpu']}), "
            f"jax {env['jax']}; matmul peak {report['matmul_peak_gflop_per_s']:.1f} GFLOP/s "
            f"(float32, {FLAGS.matmul_size}^2, measured in this run).", "",
            "| step | batch | ms/step median [min, max] | images/s | GFLOP/step | GFLOP/s | "
            "of peak | peak MiB | compile s |", "|---|---|---|---|---|---|---|---|---|", *rows,
            ]
  if "kd_over_baseline" in report:
    lines += ["", f"KD student step / baseline step: **{report['kd_over_baseline']:.2f}x**"]
  if "peer" in report:
    peer = report["peer"]
    lines += ["", f"PyTorch peer of the baseline step: {peer['median_ms']:.0f} ms/step "
              f"[{peer['min_ms']:.0f}, {peer['max_ms']:.0f}], {peer['images_per_s']:.1f} "
              f"images/s (torch {peer['torch']}, {peer['threads']} threads, "
              f"{peer['trainable_params']:,} of {peer['params']:,} parameters trained); "
              f"kdpose / peer: **{report['kdpose_over_peer']:.2f}x**"]
  if "input_pipeline" in report:
    fed = report["input_pipeline"]
    lines += ["", f"Input pipeline: {fed['host_batches_per_s']:.2f} host batches/s, "
              f"{fed['delivery_over_consumption']:.1f}x what the baseline step consumes; the "
              f"step fed by it {fed['fed_step_ms']:.0f} ms against {fed['device_step_ms']:.0f} "
              f"ms on a batch already on the device ({fed['fed_over_device']:.2f}x)."]
  if "collectives" in report:
    lines += ["", "| step | collective | ops | of them in a loop | MiB per step |",
              "|---|---|---|---|---|"]
    lines += [f"| {step} | {kind} | {c['count']} | {c['in_loop']} | {c['bytes'] / 2**20:.2f} |"
              for step, kinds in report["collectives"].items() for kind, c in kinds.items()]
  return "\n".join(lines) + "\n"


def main(argv) -> None:
  del argv
  base = _stage_config(FLAGS.config, FLAGS.batch)
  mesh = sharding.make_mesh()
  peak = matmul_peak(FLAGS.matmul_size)
  sizes = {"teacher": base.teacher.batch_size, "student": base.student.batch_size}
  batches = {size: _device_batch(base, size, mesh) for size in set(sizes.values())}
  student_batch = batches[sizes["student"]]
  builders = {
      "teacher": (lambda: _teacher_step(base, mesh, batches[sizes["teacher"]]), "teacher"),
      "student_kd": (lambda: _kd_student_step(base, mesh, student_batch), "student"),
      "student_baseline": (lambda: _student_step(baseline_config(base), mesh, student_batch),
                           "student"),
      "predictor": (lambda: _predictor(base, mesh, student_batch), "student"),
  }
  unknown = sorted(set(FLAGS.only) - set(builders))
  if unknown:
    raise app.UsageError(f"--only: unknown steps {unknown}; known: {list(builders)}.")
  if (FLAGS.peer or FLAGS.input_pipeline) and FLAGS.only and "student_baseline" not in FLAGS.only:
    raise app.UsageError("--peer and --input_pipeline measure against student_baseline: add it "
                         "to --only.")
  timed = {name: (build(), stage) for name, (build, stage) in builders.items()
           if name in (FLAGS.only or builders)}
  for step, _ in timed.values():
    for _ in range(FLAGS.warmup):
      step()
  peer = Peer(base, sizes["student"]) if FLAGS.peer else None
  times = {name: [] for name in timed} | ({"peer": []} if peer else {})
  try:
    for index in range(FLAGS.rounds):  # rounds alternate, so a load slows every step alike
      for name, (step, _) in timed.items():
        times[name] += step.timed_round(FLAGS.steps)
      if peer:
        times["peer"] += peer.timed_round()
      print(f"round {index}: " + ", ".join(f"{n} {1e3 * statistics.median(t[-FLAGS.steps:]):.0f}"
                                           " ms" for n, t in times.items()), flush=True)
  finally:
    if peer:
      peer.close()
  report = {"command": " ".join(["tools/benchmark.py", *sys.argv[1:]]),
            "environment": _environment(), "matmul_peak_gflop_per_s": peak / 1e9, "steps": {}}
  for name, (step, stage) in timed.items():
    row = summarise(times[name], sizes[stage], step.flops, peak)
    row.update(batch=sizes[stage], compile_s=step.compile_s, peak_mib=step.peak_bytes / 2**20)
    report["steps"][name] = row
  rows = report["steps"]
  if {"student_kd", "student_baseline"} <= set(rows):
    report["kd_over_baseline"] = (rows["student_kd"]["median_ms"]
                                  / rows["student_baseline"]["median_ms"])
  if peer:
    report["peer"] = summarise(times["peer"], sizes["student"], float("nan"), peak)
    report["peer"].update({k: peer.ready[k] for k in ("torch", "threads", "params",
                                                       "trainable_params")})
    report["kdpose_over_peer"] = (rows["student_baseline"]["images_per_s"]
                                  / report["peer"]["images_per_s"])
  if FLAGS.input_pipeline:
    fed = input_pipeline(base, mesh, timed["student_baseline"][0], sizes["student"])
    fed["device_step_ms"] = rows["student_baseline"]["median_ms"]
    fed["delivery_over_consumption"] = fed["host_batches_per_s"] * fed["device_step_ms"] / 1e3
    fed["fed_over_device"] = fed["fed_step_ms"] / fed["device_step_ms"]
    report["input_pipeline"] = fed
  if FLAGS.collectives:
    report["collectives"] = {name: collective_bytes(timed[name][0].compiled.as_text())
                             for name in ("student_kd", "student_baseline", "teacher")
                             if name in timed}
  text = markdown(report)
  print(text)
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(report, f, indent=2)
  if FLAGS.md:
    with open(FLAGS.md, "w") as f:
      f.write(text)


def _define_flags() -> None:
  """The command line (defined on running, so tests can import this module beside others)."""
  config_flags.DEFINE_config_file("config", "configs/default.py", "Training config.")
  flags.DEFINE_list("only", [], "Time only these steps (teacher, student_kd, student_baseline, "
                    "predictor); default all.")
  flags.DEFINE_integer("batch", 0, "Global batch of every timed step (0: each stage's own).")
  flags.DEFINE_integer("source_size", 128, "Side of the stored uint8 crops (synthetic_views).")
  flags.DEFINE_integer("stored_points", 2048, "Points stored per example (the teacher samples).")
  flags.DEFINE_integer("steps", 5, "Timed steps per round.")
  flags.DEFINE_integer("rounds", 3, "Timed rounds per step.")
  flags.DEFINE_integer("warmup", 2, "Untimed calls after compilation.")
  flags.DEFINE_integer("matmul_size", 2048, "Side of the square float32 matmul timed as the peak.")
  flags.DEFINE_boolean("peer", False, "Alternate the baseline step with its PyTorch peer.")
  flags.DEFINE_string("peer_python", sys.executable, "A Python with torch, for --peer.")
  flags.DEFINE_boolean("input_pipeline", False, "Time the input pipeline (needs the dataset).")
  flags.DEFINE_boolean("collectives", False, "Bytes per collective of the KD and baseline steps.")
  flags.DEFINE_string("json", "", "Write every number here.")
  flags.DEFINE_string("md", "", "Write a markdown table here.")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
