"""run_dir: the one compatibility check for finished runs, the pipeline layout, that no other
module spells a run's file names, and the thin evaluate / export command lines."""

import ast
import glob
import os

import pytest

from cbd_tf import config as config_lib
from cbd_tf import decoupled, run_checks, run_dir, teachers
from cbd_tf.stages import pipeline as pipeline_stage
from tests import fakes


@pytest.mark.parametrize("role, stages_allowed, run, message", [
    ("teacher", (), {"num_classes": 3}, "teacher '{d}' has 3 classes, the data has 10"),
    ("teacher", (), {"image_size": 32}, "teacher '{d}' takes 32px images, the student 28px"),
    ("teacher", (), {"stage": "crt"}, None),  # a teacher may be any finished run
    ("backbone", ("teacher", "student"), {"num_classes": 3},
     "--backbone_from='{d}' has 3 classes, the data has 10"),
    ("backbone", ("teacher", "student"), {"image_size": 32},
     "--backbone_from='{d}' takes 32px images, this run 28px"),
    ("backbone", ("teacher", "student"), {"stage": "crt"},
     "--backbone_from='{d}' is a crt run; valid: a finished teacher or student run"),
    ("backbone", ("teacher", "student"), {"stage": "student"}, None),
])
def test_check_finished_run(tmp_path, role, stages_allowed, run, message):
  directory = fakes.fake_run(str(tmp_path / "run"), **run)
  if message is None:
    run_checks.check_finished_run(directory, 10, 28, role, stages_allowed)
    return
  with pytest.raises(ValueError) as error:
    run_checks.check_finished_run(directory, 10, 28, role, stages_allowed)
  assert str(error.value) == message.format(d=directory)


@pytest.mark.parametrize("missing", ["config.json", "classes.json", "final.weights.h5"])
def test_unfinished_run_is_named_by_what_it_lacks(tmp_path, missing):
  directory = fakes.fake_run(str(tmp_path / "run"))
  os.remove(os.path.join(directory, missing))
  expected = f"run directory {directory!r} has no {missing} (not a finished training run)"
  for check in (lambda: teachers.check_teachers([directory], 10, 28),
                lambda: decoupled.check_backbone_run(directory, 10, 28)):
    with pytest.raises(ValueError) as error:
      check()
    assert str(error.value) == expected


def test_teacher_and_backbone_checks_are_the_one_check(tmp_path):
  directory = fakes.fake_run(str(tmp_path / "run"), image_size=32)
  with pytest.raises(ValueError, match="the student 28px"):
    teachers.check_teachers([directory], 10, 28)
  with pytest.raises(ValueError, match="this run 28px"):
    decoupled.check_backbone_run(directory, 10, 28)
  with pytest.raises(ValueError, match="unknown run role 'judge'; valid: teacher, backbone"):
    run_checks.check_finished_run(directory, 10, 28, "judge")


def test_pipeline_layout_and_run_directories(tmp_path):
  pipeline = config_lib.Config(workdir=str(tmp_path / "pipeline"), stage="pipeline")
  specs = pipeline.distill.teacher_specs
  runs = [pipeline_stage.teacher_config(pipeline, spec).workdir for spec in specs]
  assert runs == [os.path.join(pipeline.workdir, "teachers", config_lib.teacher_run_name(s))
                  for s in specs]
  student = pipeline_stage.student_config(pipeline)
  assert student.workdir == os.path.join(pipeline.workdir, "student")
  assert student.distill.teachers == tuple(runs)
  for directory in runs + [student.workdir]:
    fakes.fake_run(directory)
  found = run_dir.run_directories(pipeline.workdir)
  assert found == {**{config_lib.teacher_run_name(s): d for s, d in zip(specs, runs)},
                   "student": student.workdir}
  assert list(found)[-1] == "student"
  assert run_dir.run_directories(runs[0]) == {os.path.basename(runs[0]): runs[0]}
  with pytest.raises(ValueError, match="is neither a run directory nor a pipeline directory"):
    run_dir.run_directories(str(tmp_path))


# Names run_dir owns. "teachers" and "student" are left out: they also name stages and
# config fields. skipped_files.txt is the data cache's (data/source_cache.py defines it).
_FILE_NAMES = {
    run_dir.CONFIG, run_dir.CLASSES, run_dir.FINAL_WEIGHTS, run_dir.METRICS,
    run_dir.ENVIRONMENT, run_dir.SELECTION, run_dir.BEST_EPOCH_WEIGHTS,
    run_dir.BEST_EPOCH_RECORD, run_dir.CHECKPOINTS, run_dir.TENSORBOARD, run_dir.REPORT_MD,
    run_dir.REPORT_PNG, run_dir.COMPARISON, run_dir.COMPARISON_TEXT, run_dir.SAVED_MODEL,
    run_dir.EXPORT_ASSETS, run_dir.CLASS_NAMES_ASSET, run_dir.TRAIN_COUNTS_ASSET,
}


def test_no_other_module_spells_a_run_file_name():
  package = os.path.dirname(run_dir.__file__)
  spelled = []
  for path in sorted(glob.glob(os.path.join(package, "**", "*.py"), recursive=True)):
    if os.path.samefile(path, run_dir.__file__):
      continue
    with open(path) as f:
      tree = ast.parse(f.read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    spelled += [f"{os.path.relpath(path, package)}:{node.lineno} {node.value!r}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value in _FILE_NAMES
                and id(node) not in docstrings]
  assert not spelled, spelled


def _run_cli(module, *argv):
  """`python -m cbd_tf.<module> argv` in this process; returns what it exits with."""
  from cbd_tf import flags  # pylint: disable=import-outside-toplevel
  cli = __import__(f"cbd_tf.{module}", fromlist=["main"])
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS([module, *argv])
    with pytest.raises(SystemExit) as exit_info:
      cli.main([module])
  finally:
    flags.FLAGS.unparse_flags()
  return exit_info.value.code


def test_evaluate_and_export_command_lines_give_one_line_errors(tmp_path):
  empty = str(tmp_path / "empty")
  os.makedirs(empty)
  assert _run_cli("evaluate", f"--saved_model={empty}") == (
      f"cbd_tf.evaluate: error: no saved_model.pb in {empty!r}")
  assert _run_cli("evaluate", f"--workdir={empty}") == (
      f"cbd_tf.evaluate: error: {empty!r} is neither a run directory nor a pipeline directory")
  assert _run_cli("evaluate") == (
      "cbd_tf.evaluate: error: --workdir=RUN_DIR or --saved_model=EXPORT_DIR is required")
  unfinished = fakes.fake_run(str(tmp_path / "unfinished"))
  os.remove(os.path.join(unfinished, "final.weights.h5"))
  assert _run_cli("evaluate", f"--workdir={unfinished}") == (
      f"cbd_tf.evaluate: error: run directory {unfinished!r} has no final.weights.h5 "
      "(not a finished training run)")
  assert _run_cli("export", f"--workdir={unfinished}", f"--export_dir={tmp_path / 'out'}") == (
      f"cbd_tf.export: error: run directory {unfinished!r} has no final.weights.h5 "
      "(not a finished training run)")
  assert _run_cli("export", f"--workdir={unfinished}") == (
      "cbd_tf.export: error: --workdir=RUN_DIR and --export_dir=EXPORT_DIR are required")
  finished = fakes.fake_run(str(tmp_path / "finished"))
  assert _run_cli("export", f"--workdir={finished}", f"--export_dir={tmp_path / 'out'}",
                  "--top_k=0") == "cbd_tf.export: error: --top_k must be >= 1, got 0"


def _imported_modules(module: str) -> set[str]:
  """cbd_tf modules that importing `module` may import: every import statement anywhere in
  the files, followed transitively, with each package's __init__."""
  package_root = os.path.dirname(os.path.dirname(run_dir.__file__))
  seen, todo = set(), [module]
  while todo:
    name = todo.pop()
    parts = name.split(".")
    todo += [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) not in seen]
    if name in seen:
      continue
    seen.add(name)
    path = os.path.join(package_root, *parts)
    path = os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"
    if not os.path.exists(path):
      continue
    with open(path) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        todo += [alias.name for alias in node.names if alias.name.startswith("cbd_tf")]
      elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cbd_tf"):
        todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
  return {name for name in seen
          if os.path.exists(os.path.join(package_root, *name.split(".")) + ".py")
          or os.path.isdir(os.path.join(package_root, *name.split(".")))}


def test_evaluate_and_export_do_not_import_the_training_stack():
  training = {"cbd_tf.training", "cbd_tf.stages", "cbd_tf.resume", "cbd_tf.callbacks",
              "cbd_tf.teachers", "cbd_tf.decoupled", "cbd_tf.distribute", "cbd_tf.distiller"}
  for cli in ("cbd_tf.evaluate", "cbd_tf.export"):
    imported = _imported_modules(cli)
    assert "cbd_tf.flags" in imported and "cbd_tf.run_dir" in imported
    assert not imported & training, (cli, sorted(imported & training))
  assert "cbd_tf.training" in _imported_modules("cbd_tf.train")  # the check sees imports


def _top_level_imports(path):
  with open(path) as f:
    tree = ast.parse(f.read())
  for node in tree.body:
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield from (f"{node.module}.{alias.name}" for alias in node.names)
      yield node.module


def test_no_import_cycle_in_the_package():
  package_root = os.path.dirname(os.path.dirname(run_dir.__file__))
  modules = {}
  for path in glob.glob(os.path.join(package_root, "cbd_tf", "**", "*.py"), recursive=True):
    name = os.path.relpath(path, package_root)[:-3].replace(os.sep, ".")
    modules[name.removesuffix(".__init__")] = path
  imports = {name: {module for module in _top_level_imports(path)
                    if module in modules and module != name}
             for name, path in modules.items()}
  done, on_path = set(), []

  def visit(name):
    assert name not in on_path, " -> ".join(on_path[on_path.index(name):] + [name])
    if name in done:
      return
    on_path.append(name)
    for module in sorted(imports[name]):
      visit(module)
    on_path.pop()
    done.add(name)
  for name in sorted(modules):
    visit(name)


def test_a_renamed_flag_names_its_new_name(tmp_path):
  assert _run_cli("export", f"--workdir={tmp_path}", f"--output={tmp_path}/e") == (
      "cbd_tf.export: error: --output is now --export_dir")
  assert _run_cli("train", f"--workdir={tmp_path}", f"--output={tmp_path}/e") == (
      "cbd_tf.train: error: --output is now --export_dir")


def test_evaluate_and_export_refuse_training_flags(tmp_path):
  assert _run_cli("evaluate", f"--workdir={tmp_path}", "--epochs=5") == (
      "cbd_tf.evaluate: error: --epochs is not a flag of evaluate, which takes --saved_model, "
      "--test_time_crops, --workdir")
  assert _run_cli("export", f"--workdir={tmp_path}", f"--export_dir={tmp_path}/e",
                  "--learning_rate=0.3").startswith(
      "cbd_tf.export: error: --learning_rate is not a flag of export, which takes "
      "--export_dir, --max_image_pixels, --max_request_images, --posthoc_tau, "
      "--test_time_crops, --top_k, --workdir")
