"""The smoke pipeline (one teacher, then the student) learns the same weights on one
device, on 2 logical CPUs under MirroredStrategy, and on 2 local worker processes under
MultiWorkerMirroredStrategy (synchronised BatchNorm, same seed and global batch)."""

from cbd_tf import run_models
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers

# Each test trains the smoke teacher in one or two processes.
pytestmark = pytest.mark.slow

ARGS = ["--flagfile=configs/smoke.flags", "--teacher_specs=vanilla:1", "--epochs=2",
        "--steps_per_epoch=2", "--sync_batchnorm", "--deterministic", "--eval_every_epochs=0"]
# Summation order differs across replicas and processes (float32 rounding, ~1e-7 a
# step); training amplifies it over these 4 + 4 steps to at most 3.4e-4 (measured, on
# weights of scale 0.5). Doubled gradients (a loss not divided by the replica count)
# move weights by ~1e-2 here.
ABSOLUTE_TOLERANCE = 5e-4
RELATIVE_TOLERANCE = 2e-3


def train(workdir, *extra):
  result = helpers.run_module("cbd_tf.train", *ARGS, f"--workdir={workdir}", *extra)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def weights(run_directory):
  model, _ = run_models.load_classifier(run_directory)
  return [w.numpy() for w in model.weights]


def assert_same_weights(workdir, reference):
  for run in ("teachers/vanilla_1", "student"):
    for value, expected in zip(weights(os.path.join(workdir, run)),
                               weights(os.path.join(reference, run))):
      np.testing.assert_allclose(value, expected, atol=ABSOLUTE_TOLERANCE,
                                 rtol=RELATIVE_TOLERANCE, err_msg=run)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("single"))
  train(workdir, "--strategy=default")
  return workdir


def test_mirrored_two_cpus_matches_one_device(single_device, tmp_path):
  result = train(str(tmp_path), "--strategy=mirrored", "--cpu_devices=2")
  assert "MirroredStrategy with 2 replicas" in result.stderr
  assert_same_weights(str(tmp_path), single_device)


def test_two_worker_processes_match_one_device(single_device, tmp_path):
  workers = [f"localhost:{port}" for port in free_ports(2)]
  processes = []
  for index in range(2):
    tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "2",
           "TMPDIR": str(tmp_path)}
    processes.append(subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "cbd_tf.train", *ARGS, f"--workdir={tmp_path / 'run'}",
         "--strategy=multi_worker"], cwd=helpers.ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=600) for p in processes]
  for process, (_, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-3000:]
  assert "CollectiveAllReduceStrategy with 2 replicas" in outputs[0][1]  # multi-worker
  assert_same_weights(str(tmp_path / "run"), single_device)
