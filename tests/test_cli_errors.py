"""User errors a command meets after its checks (cbd_tf/errors.py) stop it with one line
naming the problem: an unreachable preset, a damaged file, a held lock, a directory that
cannot be written. --traceback shows the traceback instead; any other exception (a bug)
keeps its traceback."""

import os
import sys

import pytest
from absl import logging as absl_logging

from cbd_tf import errors, flags, run_files, run_lock, training
from tests import helpers
from tests.test_pretrained_runs import offline_environment

SMOKE = ("--flagfile=configs/smoke.flags", "--stage=teacher", "--eval_every_epochs=0")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A finished tiny teacher run; tests copy what they damage."""
  config = helpers.config_from_argv(*SMOKE, f"--workdir={tmp_path_factory.mktemp('run')}/run")
  training.run(config)
  return config.workdir


def _run_command(monkeypatch, module, *argv):
  """`python -m cbd_tf.<module> argv` (its run()) in this process; returns what it exits
  with."""
  cli = __import__(f"cbd_tf.{module}", fromlist=["run"])
  return _run_cli(monkeypatch, cli.run, *argv)


def _run_cli(monkeypatch, run, *argv):
  """`run()` (flags.run_cli(main, ...)) with `argv` on the command line; returns what it
  exits with."""
  monkeypatch.setattr(sys, "argv", ["command", *argv])
  flags.FLAGS.unparse_flags()
  try:
    with pytest.raises(SystemExit) as exit_info:
      run()
  finally:
    flags.FLAGS.unparse_flags()
    absl_logging.get_absl_handler().filters.clear()  # console.configure's, for other tests
  return exit_info.value.code


def _run_main(monkeypatch, main, *argv):
  """flags.run_cli(main) as the command `cbd_tf.test`; returns what it exits with."""
  return _run_cli(monkeypatch, lambda: flags.run_cli(main, "", None, "cbd_tf.test"), *argv)


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _copy_run(source, destination):
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(source, destination, ignore=shutil.ignore_patterns("checkpoints", "writer.lock"))
  return str(destination)


def test_a_user_error_is_one_line_a_bug_keeps_its_traceback(monkeypatch):
  def damaged(argv):
    raise errors.DamagedFile("/r/final.weights.h5 is damaged: not a readable weights file")

  assert _run_main(monkeypatch, damaged) == (
      "cbd_tf.test: error: /r/final.weights.h5 is damaged: not a readable weights file")
  with pytest.raises(errors.DamagedFile):
    _run_main(monkeypatch, damaged, "--traceback")

  def bug(argv):
    raise KeyError("a bug")

  with pytest.raises(KeyError):
    _run_main(monkeypatch, bug)
  assert _run_main(monkeypatch, lambda argv: None) is None


def test_every_run_fault_is_a_user_error():
  for error_class in (run_files.RunFault, run_files.WriteError, run_lock.RunDirectoryInUse,
                      errors.DamagedFile, errors.PresetUnavailable):
    assert issubclass(error_class, errors.UserError)
  # ValueErrors too: the checks before a run stop on ValueError.
  assert issubclass(errors.DamagedFile, ValueError)
  assert issubclass(errors.PresetUnavailable, ValueError)


def test_unreachable_preset_is_one_line(tmp_path):
  result = helpers.run_module("cbd_tf.train", *SMOKE, f"--workdir={tmp_path / 'run'}",
                              "--backbone=keras_hub:resnet_18_imagenet",
                              env=offline_environment(tmp_path), timeout=300)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      "cbd_tf.train: error: could not load keras_hub preset 'resnet_18_imagenet' from ")


@pytest.mark.slow  # a CLI process
def test_traceback_flag_shows_a_user_errors_traceback(tmp_path):
  workdir = tmp_path / "run"
  lock = run_lock.acquire(str(workdir))
  try:
    result = helpers.run_module("cbd_tf.train", *SMOKE, f"--workdir={workdir}", "--traceback")
  finally:
    run_lock.release(lock)
  assert result.returncode == 1
  assert "Traceback (most recent call last)" in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      "cbd_tf.run_lock.RunDirectoryInUse: run directory ")


def test_damaged_weights_met_by_evaluate_and_export_are_one_line(trained_run, tmp_path,
                                                                  monkeypatch):
  run = _copy_run(trained_run, tmp_path / "run")
  weights = os.path.join(run, "final.weights.h5")
  _truncate(weights)
  prefix = f"{weights} is damaged: not a readable weights file"
  assert _run_command(monkeypatch, "evaluate", f"--workdir={run}").startswith(
      f"cbd_tf.evaluate: error: {prefix}")
  assert _run_command(monkeypatch, "export", f"--workdir={run}",
                      f"--export_dir={tmp_path / 'export'}").startswith(
                          f"cbd_tf.export: error: {prefix}")
  assert not os.path.exists(tmp_path / "export")


def test_damaged_export_met_by_evaluate_is_one_line(trained_run, tmp_path, monkeypatch):
  from cbd_tf import serving  # pylint: disable=import-outside-toplevel
  export = serving.export_run(trained_run, str(tmp_path / "export"))
  _truncate(os.path.join(export, "saved_model.pb"))
  assert _run_command(monkeypatch, "evaluate", f"--saved_model={export}").startswith(
      f"cbd_tf.evaluate: error: {export} is damaged: not a SavedModel cbd_tf.export wrote "
      f"(Cannot parse file")


def test_export_to_a_directory_that_cannot_be_written_is_one_line(trained_run, tmp_path,
                                                                 monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  assert _run_command(monkeypatch, "export", f"--workdir={trained_run}",
                      f"--export_dir={blocker}/export") == (
      f"cbd_tf.export: error: could not write the export {blocker}/export: File exists")


@pytest.mark.parametrize("name", ["final.weights.h5", "run.keras"])
def test_damaged_init_from_stops_before_training(trained_run, tmp_path, name):
  if name.endswith(".keras"):
    from cbd_tf import run_models  # pylint: disable=import-outside-toplevel
    source = str(tmp_path / name)
    run_models.load_classifier(trained_run)[0].save(source)
  else:
    source = os.path.join(_copy_run(trained_run, tmp_path / "donor"), name)
  _truncate(source)
  config = helpers.config_from_argv(*SMOKE, f"--workdir={tmp_path / 'run'}",
                                    f"--init_from={source}")
  with pytest.raises(errors.DamagedFile, match=f"^{source} is damaged: "):
    training.validate_run(config)


def test_a_run_file_that_cannot_be_written_names_it(tmp_path):
  path = str(tmp_path / "gone" / "metrics.json")
  with pytest.raises(run_files.WriteError,
                     match=f"^could not write {path}: No such file or directory"):
    run_files.write_json(path, {})


def test_compare_passes_a_commands_one_line_error_on_and_a_bugs_traceback(monkeypatch):
  import importlib.util  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "compare_tool", os.path.join(helpers.ROOT, "tools", "compare.py"))
  compare = importlib.util.module_from_spec(spec)
  monkeypatch.setitem(sys.modules, "compare_tool", compare)
  spec.loader.exec_module(compare)
  stderr = {"user": "I1207 training teacher\ncbd_tf.train: error: could not load keras_hub "
                    "preset 'x'\n",
            "bug": "Traceback (most recent call last):\n  File ...\nKeyError: 'a bug'\n"}
  for kind, text in stderr.items():
    monkeypatch.setattr(subprocess, "run", lambda *a, output=text, **k: (
        subprocess.CompletedProcess(a, 1, stdout="", stderr=output)))
    with pytest.raises(RuntimeError) as raised:
      compare._run_module("cbd_tf.train", ["--stage=teacher"])  # pylint: disable=protected-access
    if kind == "user":
      assert isinstance(raised.value, compare.CommandFailed)
      assert str(raised.value) == ("cbd_tf.train --stage=teacher failed: cbd_tf.train: error: "
                                   "could not load keras_hub preset 'x'")
    else:
      assert not isinstance(raised.value, compare.CommandFailed)
      assert "Traceback" in str(raised.value) and "KeyError: 'a bug'" in str(raised.value)
