"""The package as pip installs it: pyproject.toml's dependencies in step with the
requirements files, the console scripts, and a built wheel holding every module and the
bundled data."""

import fnmatch
import glob
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests import helpers


def pyproject():
  with open(os.path.join(helpers.ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def requirement_lines(name):
  with open(os.path.join(helpers.ROOT, name)) as f:
    return [line.strip() for line in f if line.strip() and not line.startswith(("#", "-"))]


def test_requirements_install_one_tensorflow_build():
  # KerasHub's tensorflow-text requires the `tensorflow` distribution: tensorflow-cpu beside
  # it would be a second build over the same files.
  dependencies = pyproject()["project"]["dependencies"]
  assert [r for r in dependencies if r.startswith("tensorflow")] == [
      "tensorflow==2.21.0", "tensorflow-serving-api==2.21.0", "tensorflow-datasets==4.9.10"]
  assert "keras-hub==0.32.0" in dependencies
  assert requirement_lines("requirements.txt") == []  # only `-e .[test]`
  with open(os.path.join(helpers.ROOT, "requirements.txt")) as f:
    assert "-e .[test]" in f.read().splitlines()
  # The GPU build is the same distribution and release, with its CUDA extra.
  assert requirement_lines("requirements-gpu.txt") == ["tensorflow[and-cuda]==2.21.0"]
  with open(os.path.join(helpers.ROOT, "requirements-gpu.txt")) as f:
    assert "-r requirements.txt" in f.read().splitlines()


def test_installed_environment_has_one_tensorflow_build():
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
  builds = installed & {"tensorflow", "tensorflow-cpu", "tensorflow-intel", "tf-nightly"}
  assert builds == {"tensorflow"}, builds


def test_every_data_file_in_the_package_is_package_data():
  # The bundled images (cbd_tf/data/mnist_5k.npz) and whatever data file joins them.
  declared = pyproject()["tool"]["setuptools"]["package-data"]
  package_root = os.path.join(helpers.ROOT, "cbd_tf")
  data_files = [path for path in glob.glob(os.path.join(package_root, "**", "*"), recursive=True)
                if os.path.isfile(path) and "__pycache__" not in path and not path.endswith(".py")]
  assert data_files
  for path in data_files:
    package = os.path.relpath(os.path.dirname(path), helpers.ROOT).replace(os.sep, ".")
    patterns = declared.get(package, [])
    assert any(fnmatch.fnmatch(os.path.basename(path), p) for p in patterns), path


@pytest.mark.slow
def test_console_scripts_run_each_cli_from_another_directory(tmp_path):
  # Each script reaches its CLI's own argument check; from tmp_path, so nothing is
  # imported from the checkout's directory.
  expected = {"cbd-train": "cbd_tf.train: error: --workdir is required",
              "cbd-evaluate": "cbd_tf.evaluate: error: --workdir=RUN_DIR or --saved_model",
              "cbd-export": "cbd_tf.export: error: --workdir=RUN_DIR and --export_dir=EXPORT_DIR"}
  assert set(pyproject()["project"]["scripts"]) == set(expected)
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
  processes = {name: subprocess.Popen(  # pylint: disable=consider-using-with
      [os.path.join(os.path.dirname(sys.executable), name)], cwd=tmp_path, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in expected}
  for name, process in processes.items():
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 1 and stderr.strip().splitlines()[-1].startswith(
        expected[name]), (name, stderr[-2000:])


@pytest.mark.slow
def test_wheel_holds_every_module_the_data_and_the_scripts(tmp_path):
  source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside it
  source.mkdir()
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(helpers.ROOT, name), source)
  shutil.copytree(os.path.join(helpers.ROOT, "cbd_tf"), source / "cbd_tf",
                  ignore=shutil.ignore_patterns("__pycache__"))
  result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path / "dist"), str(source)],
                          capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  (wheel,) = glob.glob(str(tmp_path / "dist" / "cbd_tf-*.whl"))
  with zipfile.ZipFile(wheel) as archive:
    names = set(archive.namelist())
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = archive.read(entry_points).decode()
  modules = {os.path.relpath(path, source).replace(os.sep, "/")
             for path in glob.glob(str(source / "cbd_tf" / "**" / "*.py"), recursive=True)}
  assert modules - names == set()
  from cbd_tf.data import sources  # pylint: disable=import-outside-toplevel
  assert os.path.relpath(sources.MNIST_FILE, helpers.ROOT).replace(os.sep, "/") in names
  for line in ("cbd-train = cbd_tf.train:run", "cbd-evaluate = cbd_tf.evaluate:run",
               "cbd-export = cbd_tf.export:run"):
    assert line in scripts
