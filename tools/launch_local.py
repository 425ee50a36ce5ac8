r"""Runs a command as the P processes of one JAX job on this machine, D CPU devices each.

  python tools/launch_local.py --processes 2 --devices 2 -- \
      python -m kdpose.main --config configs/default.py:tiny --workdir /tmp/kdpose_2x2

Process ``i`` gets ``KDPOSE_COORDINATOR`` (127.0.0.1 and a free port), ``KDPOSE_NUM_PROCESSES``
and ``KDPOSE_PROCESS_ID`` (``kdpose.multihost`` reads them), ``JAX_PLATFORMS=cpu`` and
``--xla_force_host_platform_device_count=D`` in ``XLA_FLAGS``: a multi-host job in miniature,
collectives through gloo. The launcher prints ``process <i>: pid <pid>`` for each; their output
goes to ``--log_dir/process_<i>.log``, or to this terminal.

SIGTERM and SIGINT are passed on to every process (kdpose saves the step and stops); a second
one kills them. When one process fails, the others are killed at once: none can go on without
it (their collectives would wait for it until a timeout). Exit status: 0 when every process
succeeded, else the first failed one's (128 + the signal number for one killed by a signal).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def free_port() -> int:
  """A TCP port of 127.0.0.1 that nothing listens on (at the time of asking)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def process_env(base: Mapping[str, str], coordinator: str, num_processes: int, process_id: int,
                devices: int) -> dict[str, str]:
  """``base`` with what process ``process_id`` of the job needs; another device count in
  ``XLA_FLAGS`` is replaced."""
  xla_flags = [flag for flag in base.get("XLA_FLAGS", "").split()
               if not flag.startswith(DEVICE_COUNT_FLAG)]
  return dict(base, KDPOSE_COORDINATOR=coordinator, KDPOSE_NUM_PROCESSES=str(num_processes),
              KDPOSE_PROCESS_ID=str(process_id), JAX_PLATFORMS="cpu",
              XLA_FLAGS=" ".join([*xla_flags, f"{DEVICE_COUNT_FLAG}={devices}"]))


def _exit_status(returncode: int) -> int:
  return 128 - returncode if returncode < 0 else returncode


def wait(children: Sequence[subprocess.Popen], poll_s: float = 0.1) -> int:
  """Waits for every child; kills the rest as soon as one fails. Returns the exit status."""
  while True:
    codes = [child.poll() for child in children]
    failed = [code for code in codes if code not in (None, 0)]
    if failed:
      for child in children:
        if child.poll() is None:
          child.kill()
      for child in children:
        child.wait()
      return _exit_status(failed[0])
    if all(code == 0 for code in codes):
      return 0
    time.sleep(poll_s)


def launch(command: Sequence[str], processes: int, devices: int, log_dir: str | None) -> int:
  """Starts ``processes`` copies of ``command`` as one job; returns the exit status."""
  coordinator = f"127.0.0.1:{free_port()}"
  if log_dir:
    os.makedirs(log_dir, exist_ok=True)
  children = []
  for index in range(processes):
    log = open(os.path.join(log_dir, f"process_{index}.log"), "w") if log_dir else None
    children.append(subprocess.Popen(
        command, env=process_env(os.environ, coordinator, processes, index, devices),
        stdout=log, stderr=subprocess.STDOUT if log else None))
    if log:
      log.close()  # the child holds its own copy
    print(f"process {index}: pid {children[-1].pid}", flush=True)

  received = []

  def pass_on(number, frame):  # the first signal to each process, SIGKILL on a second one
    del frame
    received.append(number)
    for child in children:
      if child.poll() is None:
        child.send_signal(number if len(received) == 1 else signal.SIGKILL)

  for number in (signal.SIGTERM, signal.SIGINT):
    signal.signal(number, pass_on)
  return wait(children)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--processes", type=int, default=2, help="Processes of the job.")
  parser.add_argument("--devices", type=int, default=2, help="CPU devices of each process.")
  parser.add_argument("--log_dir", default=None, help="Write process i's output to "
                      "LOG_DIR/process_<i>.log (default: this terminal).")
  parser.add_argument("command", nargs=argparse.REMAINDER,
                      help="-- then the command each process runs.")
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  if not command or args.processes < 1 or args.devices < 1:
    parser.error("give --processes >= 1, --devices >= 1 and a command after --.")
  return launch(command, args.processes, args.devices, args.log_dir)


if __name__ == "__main__":
  sys.exit(main())
