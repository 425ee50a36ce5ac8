r"""kdpose's EfficientNet-Lite0 student train step (JAX) against a PyTorch peer, side by side.

  .venv/bin/python tools/benchmark_lite_step.py --batch 64 --size 128 --steps 5 --rounds 3 \
      --peer_python /tmp/torchenv2/bin/python \
      --json tools/results/lite0_step_cpu.json --md tools/results/lite0_step_cpu.md

The JAX step is ``steps.student_train_step`` of ``configs/default.py:pretrained,baseline``
(random weights), jitted as the trainer does (``donate_argnums=0``), with its on-device
augmentation; the peer is ``tools/peer/student_step.py`` (its docstring says what its step does),
run by ``--peer_python`` (a Python with torch: this one needs none). Both take the same random
uint8 batch of side ``--source_size``. After compiling and warming up both, rounds alternate: a
JAX round of ``--steps`` steps in this process, then a round of the peer, which waits on its stdin
in between, so the two never run at the same time and a loaded machine slows both alike.
Reported per side: median, min and max step time over all timed steps, images/s at the median,
and the ratio kdpose / peer images/s.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import flax
import jax
import jaxlib
import numpy as np
from absl import app, flags

from configs import default
from kdpose import steps
from kdpose.models import depthwise
from kdpose.trainers import student

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 64, "Images per step.")
flags.DEFINE_integer("size", 128, "Network input side, pixels.")
flags.DEFINE_integer("source_size", 160, "Side of the uint8 source images, pixels.")
flags.DEFINE_integer("steps", 5, "Timed steps per round and side.")
flags.DEFINE_integer("rounds", 3, "Rounds per side (alternating).")
flags.DEFINE_integer("warmup", 2, "Untimed steps per side after compilation.")
flags.DEFINE_string("peer_python", "/tmp/torchenv2/bin/python", "A Python that has torch.")
flags.DEFINE_string("json", "", "Write the results here.")
flags.DEFINE_string("md", "", "Write a markdown summary here.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(ROOT, "tools", "peer", "student_step.py")
sys.path.insert(0, ROOT)
from tools.peer.batch import make_batch  # noqa: E402 (torch-free: both sides draw this batch)


def jax_step():
  """A function () -> metrics running the jitted baseline student step on a fresh state, and
  the seconds its compilation (the first call) took."""
  config = default.get_config("pretrained,baseline")
  config.image_size = FLAGS.size
  config.student.batch_size = FLAGS.batch
  config.student.model.pretrained = ""  # random weights: the same speed, no weight package
  model, tx, schedule, init_fn = student.build(config)
  jitted = jax.jit(functools.partial(
      steps.student_train_step, model=model, teacher=None, tx=tx, schedule=schedule,
      options=student.step_options(config)), donate_argnums=0)
  holder = {"state": jax.jit(init_fn)(jax.random.key(0))}
  batch = jax.device_put(make_batch(FLAGS.batch, FLAGS.source_size, config.num_points))
  rng = jax.random.key(1)

  def run():
    holder["state"], metrics = jitted(holder["state"], {}, batch, rng)
    return jax.block_until_ready(metrics)

  start = time.perf_counter()
  run()
  return run, time.perf_counter() - start


def jax_round(run, index: int) -> dict:
  times = []
  for _ in range(FLAGS.steps):
    start = time.perf_counter()
    metrics = run()
    times.append(time.perf_counter() - start)
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise FloatingPointError(f"tools/benchmark_lite_step.py: JAX loss {loss} in round {index}.")
  return {"side": "kdpose", "round": index, "step_s": times, "loss": loss}


def start_peer() -> tuple[subprocess.Popen, dict]:
  """The peer process, warmed up and waiting for its first round, and its ready line."""
  args = [FLAGS.peer_python, PEER, "--batch", str(FLAGS.batch), "--size", str(FLAGS.size),
          "--source_size", str(FLAGS.source_size), "--steps", str(FLAGS.steps),
          "--warmup", str(FLAGS.warmup), "--rounds", str(FLAGS.rounds), "--wait"]
  peer = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, bufsize=1)
  return peer, read_line(peer)


def read_line(peer: subprocess.Popen) -> dict:
  line = peer.stdout.readline()
  if not line:
    raise RuntimeError(f"tools/benchmark_lite_step.py: the peer ({FLAGS.peer_python} {PEER}) "
                       f"exited with {peer.wait()} before answering; see its stderr above.")
  return json.loads(line)


def summary(rounds: list[dict]) -> dict:
  times = [t for r in rounds for t in r["step_s"]]
  median = statistics.median(times)
  return {"median_step_s": median, "min_step_s": min(times), "max_step_s": max(times),
          "images_per_s": FLAGS.batch / median, "timed_steps": len(times),
          "round_median_step_s": [statistics.median(r["step_s"]) for r in rounds],
          "last_loss": rounds[-1]["loss"]}


def write_markdown(path: str, report: dict) -> None:
  setup, env = report["setup"], report["environment"]
  rows = [f"| {name} | {1e3 * s['median_step_s']:.0f} | {1e3 * s['min_step_s']:.0f} | "
          f"{1e3 * s['max_step_s']:.0f} | {s['images_per_s']:.1f} |"
          for name, s in (("kdpose (JAX)", report["kdpose"]), ("peer (PyTorch)", report["peer"]))]
  text = "\n".join([
      "# EfficientNet-Lite0 student train step on CPU: kdpose (JAX) vs a PyTorch peer", "",
      f"Batch {setup['batch']}, input {setup['image_size']} px from uint8 sources of "
      f"{setup['source_size']} px, float32, augmentation inside the step on both sides. "
      f"{setup['rounds']} alternating rounds of {setup['steps']} steps per side after "
      f"{setup['warmup']} warm-up steps (JAX compile {setup['jax_compile_s']:.0f} s).", "",
      "| side | median ms/step | min | max | images/s |", "|---|---|---|---|---|", *rows, "",
      f"**kdpose / peer images/s: {report['ratio_kdpose_over_peer']:.2f}x**", "",
      f"jax {env['jax']}, jaxlib {env['jaxlib']}, flax {env['flax']}, torch {env['torch']} "
      f"({env['torch_threads']} threads); {env['cpus']} CPUs ({env['cpu_count']} reported), "
      f"{env['machine']}; depthwise implementation: {env['depthwise']}.", "",
      "Made by `tools/benchmark_lite_step.py`; the peer's step is described in "
      "`tools/peer/student_step.py`.", ""])
  with open(path, "w") as f:
    f.write(text)


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
  except OSError:
    names = []
  return names[0] if names else platform.machine()


def main(argv) -> None:
  del argv
  run, compile_s = jax_step()
  for _ in range(FLAGS.warmup):
    run()
  peer, ready = start_peer()
  rounds = {"kdpose": [], "peer": []}
  try:
    for index in range(FLAGS.rounds):
      rounds["kdpose"].append(jax_round(run, index))
      peer.stdin.write("go\n")
      peer.stdin.flush()
      rounds["peer"].append(read_line(peer))
      print(f"round {index}: kdpose {statistics.median(rounds['kdpose'][-1]['step_s']):.2f} "
            f"s/step, peer {rounds['peer'][-1]['median_s']:.2f} s/step", flush=True)
  finally:
    peer.stdin.close()
    peer.wait()
  report = {"kdpose": summary(rounds["kdpose"]), "peer": summary(rounds["peer"])}
  report["ratio_kdpose_over_peer"] = (report["kdpose"]["images_per_s"]
                                      / report["peer"]["images_per_s"])
  report["setup"] = {"batch": FLAGS.batch, "image_size": FLAGS.size,
                     "source_size": FLAGS.source_size, "steps": FLAGS.steps,
                     "rounds": FLAGS.rounds, "warmup": FLAGS.warmup, "jax_compile_s": compile_s,
                     "peer_warmup_s": ready["warmup_s"], "peer_params": ready["params"]}
  report["environment"] = {
      "jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
      "torch": ready["torch"], "torch_threads": ready["threads"],
      "cpu_count": os.cpu_count(), "cpus": len(os.sched_getaffinity(0)),
      "machine": cpu_model(), "backend": jax.default_backend(),
      "depthwise": depthwise._implementation("auto"), "python": sys.version.split()[0]}
  report["rounds"] = rounds
  print(json.dumps({k: v for k, v in report.items() if k != "rounds"}, indent=2))
  if FLAGS.json:
    with open(FLAGS.json, "w") as f:
      json.dump(report, f, indent=2)
  if FLAGS.md:
    write_markdown(FLAGS.md, report)


if __name__ == "__main__":
  app.run(main)
