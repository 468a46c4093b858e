"""The README cannot name what does not exist: every --flag it writes is a flag of cbd_tf, of
a tool under tools/ or of the named outside program, and every configs/ path is a file."""

import glob
import os
import re

from tests import helpers

# Flags of programs the README quotes that are not ours: TF Serving's model server and
# docker (`--rest_api_port`, `--model_name`, `--model_base_path`, `--mount`),
# saved_model_cli (`--all --dir`) and tensorboard (`--logdir`).
OUTSIDE_FLAGS = {"rest_api_port", "model_name", "model_base_path", "mount", "all", "dir",
                 "logdir"}
# absl's own.
ABSL_FLAGS = {"flagfile", "help", "helpfull"}


def readme():
  with open(os.path.join(helpers.ROOT, "README.md")) as f:
    return f.read()


def known_flags() -> set[str]:
  from cbd_tf import flags  # pylint: disable=import-outside-toplevel
  names = {name for name, flag in flags.FLAGS._flags().items()  # pylint: disable=protected-access
           if flags.FLAGS.find_module_defining_flag(name) == flags.__name__}
  booleans = {name for name in names if flags.FLAGS[name].flag_type() == "bool"}
  tools = set()
  for path in glob.glob(os.path.join(helpers.ROOT, "tools", "*.py")):
    with open(path) as f:
      tools |= set(re.findall(r"add_argument\(\s*\"--([a-z0-9_]+)\"", f.read()))
  return names | {f"no{name}" for name in booleans} | tools | ABSL_FLAGS | OUTSIDE_FLAGS


def test_every_flag_the_readme_names_exists():
  named = set(re.findall(r"(?<![\w-])--([a-z][a-z0-9_]*)(?![\w-])", readme()))
  unknown = sorted(named - known_flags())
  assert not unknown, unknown


def test_every_config_the_readme_names_exists():
  paths = set(re.findall(r"configs/[\w/]+\.flags", readme()))
  assert paths
  missing = sorted(p for p in paths if not os.path.exists(os.path.join(helpers.ROOT, p)))
  assert not missing, missing
