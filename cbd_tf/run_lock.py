"""One writer per run directory: while a process trains in RUN_DIR, RUN_DIR/writer.lock
holds its pid, host and start time, so a second process (the same command re-run while
the first goes on, two workers given the same task) stops at once, naming the first.

A lock whose process is gone (same host, no such pid: a kill -9, a crash) is taken over
with a warning. A lock from another host cannot be checked from here: it stops the run,
and the message says which file to remove once that process is known to be gone. In a
multi-worker run only the chief writes the run directory, so only the chief locks it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

from absl import logging

from cbd_tf import run_dir, run_files


class RunDirectoryInUse(run_files.RunFault):
  """Another live process trains in this run directory."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # exists, owned by someone else
    return True
  return True


def _read(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}  # being written, or damaged


def acquire(directory: str) -> str:
  """Takes RUN_DIR's lock (module docstring); returns its path. RunDirectoryInUse if a
  live process holds it."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, run_dir.WRITER_LOCK)
  mine = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S")}
  for _ in range(3):
    try:
      descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      holder = _read(path)
      if _held_here(path):
        return path
      if holder.get("host") == mine["host"] and not _alive(int(holder.get("pid", -1))):
        logging.warning("taking over %s: process %s on %s (since %s) is gone", path,
                        holder.get("pid"), holder.get("host"), holder.get("started"))
        with contextlib.suppress(FileNotFoundError):
          os.remove(path)
        continue
      if not holder:  # another process is writing it this instant
        time.sleep(0.2)
        continue
      raise RunDirectoryInUse(
          f"run directory {directory!r} is in use by process {holder.get('pid')} on "
          f"{holder.get('host')} (since {holder.get('started')}); if that process is gone, "
          f"remove {path}")
    with os.fdopen(descriptor, "w") as f:
      json.dump(mine, f)
    return path
  raise RunDirectoryInUse(f"could not take the lock {path}: it changed hands repeatedly")


def release(path: str) -> None:
  """Removes the lock if this process holds it."""
  if _held_here(path):
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def hold(directory: str, writes: bool = True):
  """The lock of `directory` for the body; a process that does not write (a non-chief
  worker) takes none."""
  path = os.path.join(directory, run_dir.WRITER_LOCK)
  if not writes or _held_here(path):  # a pipeline's run() holds it around train_stage
    yield
    return
  path = acquire(directory)
  try:
    yield
  finally:
    release(path)


def _held_here(path: str) -> bool:
  holder = _read(path)
  return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
