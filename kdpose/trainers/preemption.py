"""Preemption: SIGTERM or SIGINT during training saves the current step and stops the run.

A cluster scheduler sends SIGTERM some seconds before it kills a job (Ctrl-C sends SIGINT).
While ``StopSignals`` is active either one only sets a flag; the loop checks it after each
step, saves a checkpoint of that step and raises ``Preempted``. The same command rerun resumes
from that checkpoint: no step is lost, and the run ends as an uninterrupted one would.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preempted(Exception):
  """Training stopped on a signal after saving the checkpoint of ``step``."""

  def __init__(self, stage: str, step: int, cause: str):
    super().__init__(f"{stage} stage: stopped by {cause} after saving step {step}; rerun the same "
                     "command to continue.")
    self.stage, self.step = stage, step


class StopSignals:
  """Context manager: SIGTERM and SIGINT set ``received`` (the signal's name) instead of ending
  the process; the handlers from before are back on exit.

  The handlers restart interrupted system calls (``SA_RESTART``): a signal that lands in one of
  native code's blocking calls (gloo connecting its peers, tensorstore writing a checkpoint)
  would otherwise fail that call with EINTR, which such code need not retry.

  Only the main thread may set handlers: elsewhere (a runner called from a thread) the signals
  keep their handlers and ``stop_requested`` only reports other processes' signals.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __enter__(self) -> StopSignals:
    self.received = None
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
      for number in self.SIGNALS:
        signal.siginterrupt(number, False)
    return self

  def _handle(self, number, frame) -> None:
    del frame
    self.received = signal.Signals(number).name

  def __exit__(self, *exc_info) -> None:
    for number, handler in self._previous.items():
      signal.signal(number, handler)

  def stop_requested(self) -> bool:
    """Whether this process or any other got a signal. Every process gets the same answer at
    the same step (multi-host: one all-gather of a bool per call), so they save the same step."""
    local = self.received is not None
    if jax.process_count() == 1:
      return local
    return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))

  def cause(self) -> str:
    return self.received or "a signal to another process"
