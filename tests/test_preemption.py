"""StopSignals (kdpose/trainers/preemption.py) against the process's real signal machinery."""

import ctypes
import os
import signal
import threading
import time

from kdpose.trainers import preemption


def _read_in_native_code(fd: int) -> tuple[int, int]:
  """libc's read(2) of one byte from ``fd``, as native code (gloo, tensorstore) calls it, outside
  Python's EINTR retries (PEP 475): (its return value, errno)."""
  libc = ctypes.CDLL(None, use_errno=True)
  buffer = ctypes.create_string_buffer(1)
  ctypes.set_errno(0)
  return libc.read(fd, buffer, 1), ctypes.get_errno()


def test_sigterm_during_a_blocking_native_call_sets_the_flag_and_the_call_goes_on():
  read_end, write_end = os.pipe()
  main_thread = threading.get_ident()

  def signal_then_write():  # SIGTERM lands while the main thread is blocked in read(2)
    time.sleep(0.3)
    signal.pthread_kill(main_thread, signal.SIGTERM)
    time.sleep(0.3)
    os.write(write_end, b"x")

  other = threading.Thread(target=signal_then_write)
  try:
    with preemption.StopSignals() as signals:
      other.start()
      result = _read_in_native_code(read_end)
      other.join()
  finally:
    os.close(read_end)
    os.close(write_end)
  # Without SA_RESTART the read would return -1 with EINTR (4), failing the native call.
  assert result == (1, 0)
  assert signals.received == "SIGTERM" and signals.stop_requested()
