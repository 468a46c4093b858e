"""A command's console (cbd_tf/console.py): cbd_tf's own lines; TensorFlow's INFO lines (a
"Sharding callback duration" per checkpoint) only with --tf_verbosity=info; TensorFlow's
start-up lines at most once."""

import os
import re
import subprocess
import sys

import pytest

from cbd_tf import console
from tests import helpers

# One short teacher run: two steps, a checkpoint at each.
TINY_RUN = ("--flagfile=configs/smoke.flags", "--stage=teacher", "--eval_every_epochs=0",
            "--checkpoint_every_steps=1")
SHARDING = "Sharding callback duration"
# A C++ log record: severity and date, time, thread, then "file.cc:line] message".
CPP_RECORD = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ (\S+\.(?:cc|cpp|h):\d+\] .*)$", re.M)

# What stderr got while TensorFlow 2.21 loaded: the start-up lines twice (its profiler
# plugin's copy of absl logging prints them again).
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796627882.603934   21764 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796627882.645908   21764 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796627884.317719   21764 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796627884.318291   21764 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.
To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.
W0000 00:00:1796627884.318291   21764 loader.cc:12] a plugin did not load
/x/y.py:3: UserWarning: something to see
  warnings.warn("something to see")
"""


def test_startup_lines_keep_what_the_verbosity_asks_for_each_once():
  info = console.startup_lines(STARTUP, "info")
  assert info == STARTUP.splitlines(keepends=True)[:4] + STARTUP.splitlines(keepends=True)[8:]
  assert console.startup_lines(STARTUP, "error") == STARTUP.splitlines(keepends=True)[9:]
  assert console.startup_lines(STARTUP, "warning") == STARTUP.splitlines(keepends=True)[8:]


def test_the_verbosity_is_read_from_the_command_line_and_its_flagfiles(tmp_path):
  inner, outer = tmp_path / "inner.flags", tmp_path / "outer.flags"
  inner.write_text("# a comment\n--tf_verbosity=warning\n")
  outer.write_text(f"--flagfile={inner}\n--epochs=2\n")
  assert console.requested_verbosity(["train", f"--flagfile={outer}"]) == "warning"
  assert console.requested_verbosity(["train", f"--flagfile={outer}", "--tf_verbosity",
                                      "info"]) == "info"
  assert console.requested_verbosity(["train", "--tf_verbosity=info",
                                      f"--flagfile={outer}"]) == "warning"
  assert console.requested_verbosity(["train", "--epochs=2"]) is None
  looped = tmp_path / "looped.flags"
  looped.write_text(f"--tf_verbosity=fatal\n--flagfile={looped}\n")
  assert console.requested_verbosity(["train", f"--flagfile={looped}"]) == "fatal"


def _run(tmp_path, *args):
  """The tiny run through the command line, with TF_CPP_MIN_LOG_LEVEL unset: (its stdout,
  its stderr)."""
  env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
  result = subprocess.run([sys.executable, "-m", "cbd_tf.train", *TINY_RUN,
                           f"--workdir={tmp_path / 'run'}", *args], cwd=helpers.ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, result.stderr


def test_a_run_shows_its_own_lines_and_no_tensorflow_info(tmp_path):
  stdout, stderr = _run(tmp_path)
  console_text = stdout + stderr
  assert "training teacher in" in console_text  # ours
  assert SHARDING not in console_text
  assert "absl::InitializeLog" not in console_text
  assert not [record for record in CPP_RECORD.findall(console_text)
              if not record.startswith("cuda_platform.cc")], console_text  # see observing.md
  assert "Traceback" not in console_text


@pytest.mark.slow  # a second run and a bare TensorFlow import
def test_tf_verbosity_info_brings_tensorflow_lines_back_start_up_lines_once(tmp_path):
  bare = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                        text=True, timeout=300, check=False,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
  startup = set(CPP_RECORD.findall(bare.stderr))
  stdout, stderr = _run(tmp_path, "--tf_verbosity=info")
  records = CPP_RECORD.findall(stderr)
  assert startup <= set(records)
  assert len(records) == len(set(records)), stderr  # each once
  assert stderr.count(SHARDING) >= 2  # a checkpoint per step
  assert "training teacher in" in stdout + stderr
