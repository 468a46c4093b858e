"""Fixtures shared by several test modules. Fakes and writers of test data: tests/fakes.py."""

import os

import pytest

from tests import helpers  # numpy only: TensorFlow is imported after the line below

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The reference-only rejection sampler (cbd_tf/data/stream_sampling.py), which training
# never uses, reads thousands of records per check: tests parametrised over it run in the
# full suite only, like the tests marked `slow` where they are defined.
REFERENCE_STREAM_METHODS = ("rejection",)


def pytest_collection_modifyitems(items):
  for item in items:
    callspec = getattr(item, "callspec", None)
    if callspec and callspec.params.get("method") in REFERENCE_STREAM_METHODS:
      item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def pipeline_dir(tmp_path_factory):
  """The smoke pipeline trained once through the command line, with an export and a profile:
  (its workdir, what it printed). Tests read it and must leave it as it is."""
  workdir = str(tmp_path_factory.mktemp("smoke"))
  result = helpers.run_module("cbd_tf.train", "--flagfile=configs/smoke.flags",
                              f"--workdir={workdir}", "--log_every_steps=1",
                              "--profile_batches=1,2", f"--export_dir={workdir}/export")
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result.stdout
