"""Progress of a run with its ETA: one log line (and a steps/s scalar) every ``every_secs``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


def format_duration(seconds: float) -> str:
  """``3725`` -> ``"1h02m"``, ``125`` -> ``"2m05s"``, ``7`` -> ``"7s"``."""
  seconds = max(0, int(round(seconds)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class StageProgress:
  """Reports a stage's progress and the run's ETA.

  The stage's seconds per step are measured from the first step this process ran (which
  includes compilation, so early ETAs run long); steps of the stages still to come
  (``later_steps``) are assumed to take as long (a rough guess: a distilled student trains no
  point encoder but also runs the frozen teacher).

  Attributes:
    stage: the stage's name.
    num_steps: the stage's last step.
    later_steps: steps of the stages after this one.
    write_scalars: (step, {name: value}) -> None, e.g. a clu metric writer's ``write_scalars``;
      None: log lines only (the head warm-up, whose steps are not the stage's).
    every_secs: seconds between reports.
    clock: seconds since some fixed point (``time.monotonic``; tests pass their own).
  """

  def __init__(self, stage: str, num_steps: int, later_steps: int,
               write_scalars: Callable[[int, dict[str, float]], None] | None,
               every_secs: float = 30.0,
               clock: Callable[[], float] = time.monotonic):
    self.stage, self.num_steps, self.later_steps = stage, num_steps, later_steps
    self._write_scalars, self._every_secs, self._clock = write_scalars, every_secs, clock
    self._first_step = self._first_time = self._last_report = None

  def __call__(self, step: int) -> str | None:
    """Call after each step; returns the line it logged, if it logged one."""
    now = self._clock()
    if self._first_step is None:
      self._first_step, self._first_time, self._last_report = step, now, now
      return None
    if now - self._last_report < self._every_secs and step != self.num_steps:
      return None
    self._last_report = now
    seconds_per_step = (now - self._first_time) / (step - self._first_step)
    stage_left = (self.num_steps - step) * seconds_per_step
    line = (f"{self.stage}: step {step}/{self.num_steps} ({100.0 * step / self.num_steps:.0f}%), "
            f"{seconds_per_step:.2f} s/step, stage ETA {format_duration(stage_left)}")
    if self.later_steps:
      run_left = stage_left + self.later_steps * seconds_per_step
      line += f", run ETA {format_duration(run_left)} (later stages: {self.later_steps} steps)"
    logging.info(line)
    if self._write_scalars is not None:
      self._write_scalars(step, {"steps_per_sec": 1.0 / seconds_per_step})
    return line
