"""The docs cannot name what does not exist. For README.md and every docs/*.md:

* every --flag they write is a flag of cbd_tf, of a tool under tools/ or of the named
  outside program, each command line's flags are that command's own (evaluate and export
  take few), and every configs/ path is a file;
* every relative Markdown link points to a file that exists and, with a #anchor, to one of
  its headings (GitHub's anchors: lowercase, spaces to '-', punctuation dropped);
* every ```python snippet runs as written, each in a fresh process whose working directory
  is an empty temporary directory (not the project root).

A snippet too slow as written, or one that cannot run here, says so in a comment:

* `CODE  # docs-test: epochs=1, steps_per_epoch=2` at the end of a line: the test runs the
  line with each `NAME=value` on it replaced by the given one (small settings for the test;
  the reader sees the real ones). A NAME not on the line fails the test.
* `# docs-test: skip (REASON)` on a line of its own: the snippet is not run and the test
  is reported as skipped with REASON, e.g. `(needs network: downloads a KerasHub preset)`.
  Keep these rare: prefer a snippet on the bundled data (`cbd_tf.load_data("mnist_lt")`).

Shell snippets (```sh, indented commands) are not run; their flags and configs/ paths are
checked like the rest of the text.
"""

import glob
import os
import re
import subprocess
import sys

import pytest

from tests import helpers

# Flags of programs the docs quote that are not ours: TF Serving's model server and
# docker (`--rest_api_port`, `--model_name`, `--model_base_path`, `--mount`),
# saved_model_cli (`--all --dir`) and tensorboard (`--logdir`).
OUTSIDE_FLAGS = {"rest_api_port", "model_name", "model_base_path", "mount", "all", "dir",
                 "logdir"}
# absl's own.
ABSL_FLAGS = {"flagfile", "help", "helpfull", "verbosity"}
SNIPPET_TIMEOUT_S = 600


def doc_files() -> list[str]:
  """README.md and docs/*.md, relative to the project root."""
  docs = sorted(glob.glob(os.path.join(helpers.ROOT, "docs", "*.md")))
  return ["README.md"] + [os.path.relpath(path, helpers.ROOT) for path in docs]


def read(name: str) -> str:
  with open(os.path.join(helpers.ROOT, name)) as f:
    return f.read()


def cbd_tf_flags() -> set[str]:
  """Every flag of cbd_tf.train (booleans with their no- form) and absl's own."""
  from cbd_tf import flags  # pylint: disable=import-outside-toplevel
  names = {name for name, flag in flags.FLAGS._flags().items()  # pylint: disable=protected-access
           if flags.FLAGS.find_module_defining_flag(name) == flags.__name__}
  booleans = {name for name in names if flags.FLAGS[name].flag_type() == "bool"}
  return names | {f"no{name}" for name in booleans} | flags.COMMAND_FLAGS | ABSL_FLAGS


def known_flags() -> set[str]:
  return cbd_tf_flags() | tool_flags() | OUTSIDE_FLAGS


def test_every_flag_the_docs_name_exists():
  known = known_flags()
  unknown = [f"{name}: --{flag}" for name in doc_files()
             for flag in sorted(set(re.findall(r"(?<![\w-])--([a-z][a-z0-9_]*)(?![\w-])",
                                               read(name))) - known)]
  assert not unknown, unknown


def command_flags() -> dict[str, set[str]]:
  """Each command the docs run -> the flags it takes: cbd_tf.train every cbd_tf flag,
  evaluate and export the flags they read (FLAGS_READ), a tool its argparse flags."""
  from cbd_tf import evaluate, export, flags  # pylint: disable=import-outside-toplevel
  own = {"cbd_tf.train": cbd_tf_flags(), "tensorboard": {"logdir"}}
  for module in (evaluate, export):
    taken = module.FLAGS_READ | flags.COMMAND_FLAGS
    own[module.__name__] = taken | {f"no{name}" for name in taken} | ABSL_FLAGS
  for path in glob.glob(os.path.join(helpers.ROOT, "tools", "*.py")):
    name = os.path.basename(path)[:-len(".py")]
    own[f"tools/{name}.py"] = own[f"tools.{name}"] = tool_flags(path) | {"help"}
  return own


def tool_flags(path=os.path.join(helpers.ROOT, "tools", "*.py")) -> set[str]:
  found = set()
  for name in glob.glob(path):
    with open(name) as f:
      found |= set(re.findall(r"add_argument\(\s*\"--([a-z0-9_]+)\"", f.read()))
  return found


def commands(text: str):
  """(command, its --flags) of each command line in `text`: from `python -m X`,
  `python tools/X.py` or `tensorboard` to the end of the line (backslash continuations
  joined), the end of inline code or a shell comment."""
  text = text.replace("\\\n", " ")
  pattern = r"(?:python3? -m ([\w.]+)|python3? (tools/\w+\.py)|(tensorboard))([^\n`]*)"
  for match in re.finditer(pattern, text):
    command = next(group for group in match.groups()[:3] if group)
    arguments = match.group(4).split(" #")[0]
    yield command, set(re.findall(r"(?<![\w-])--([a-z][a-z0-9_]*)", arguments))


def test_every_command_in_the_docs_takes_the_flags_given_it():
  own = command_flags()
  wrong, checked = [], 0
  for name in doc_files():
    for command, given in commands(read(name)):
      if command in ("pytest", "venv") or command == "tools/NAME.py":  # not ours / a pattern
        continue
      assert command in own, f"{name}: unknown command {command}"
      checked += 1
      wrong += [f"{name}: {command} --{flag}" for flag in sorted(given - own[command])]
  assert checked > 30 and not wrong, wrong


def test_every_config_the_docs_name_exists():
  named = [(name, path) for name in doc_files()
           for path in sorted(set(re.findall(r"configs/[\w/]+\.flags", read(name))))]
  assert named
  missing = [f"{name}: {path}" for name, path in named
             if not os.path.exists(os.path.join(helpers.ROOT, path))]
  assert not missing, missing


# Links and their anchors.

def without_code_blocks(text: str) -> str:
  return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def anchors(name: str) -> set[str]:
  """The #anchors GitHub gives the headings of `name`: lowercase, punctuation dropped but
  '-' and '_', spaces to '-', and '-1', '-2', ... after a repeated one."""
  found, seen = set(), {}
  for heading in re.findall(r"^#+\s+(.*?)\s*#*$", without_code_blocks(read(name)), re.M):
    slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
    seen[slug] = seen.get(slug, -1) + 1
    found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
  return found


def test_every_relative_link_in_the_docs_points_to_a_file_and_heading():
  broken = []
  for name in doc_files():
    for target in re.findall(r"\]\(([^)\s]+)\)", without_code_blocks(read(name))):
      if re.match(r"[a-z]+:", target):  # https:, mailto:
        continue
      path, _, anchor = target.partition("#")
      linked = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
      if not os.path.exists(os.path.join(helpers.ROOT, linked)):
        broken.append(f"{name}: {target} (no file {linked})")
      elif anchor and (not linked.endswith(".md") or anchor not in anchors(linked)):
        broken.append(f"{name}: {target} (no heading #{anchor} in {linked})")
  assert not broken, broken


# Python snippets.

def python_snippets() -> list:
  """One pytest.param per ```python block: (file, line of its fence, its code)."""
  params = []
  for name in doc_files():
    text = read(name)
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
      line = text.count("\n", 0, match.start()) + 1
      params.append(pytest.param(name, line, match.group(1), id=f"{name}:{line}"))
  return params


def as_tested(code: str) -> str:
  """`code` with each `# docs-test: NAME=value, ...` line's settings replaced."""
  lines = []
  for line in code.splitlines():
    statement, marker, settings = line.partition("# docs-test:")
    if marker and statement.strip():
      for setting in settings.split(","):
        key, _, value = (part.strip() for part in setting.partition("="))
        statement, count = re.subn(rf"\b{key}\s*=\s*[^,)\s]+", f"{key}={value}", statement)
        assert count == 1, f"docs-test sets {key}, which is not once on the line: {line!r}"
      line = statement.rstrip()
    lines.append(line)
  return "\n".join(lines) + "\n"


def skip_reason(code: str) -> str | None:
  match = re.search(r"^\s*# docs-test: skip\b(.*)$", code, re.M)
  if not match:
    return None
  reason = match.group(1).strip()
  assert re.fullmatch(r"\(.+\)", reason), f"a docs-test skip names its reason in (): {reason!r}"
  return reason[1:-1]


@pytest.mark.slow  # each starts TensorFlow in a new process and trains for seconds or more
@pytest.mark.parametrize("name, line, code", python_snippets())
def test_python_snippet_runs_as_written(name, line, code, tmp_path):
  reason = skip_reason(code)
  if reason:
    pytest.skip(f"{name}:{line}: {reason}")
  script = tmp_path / "snippet.py"
  script.write_text(as_tested(code))
  result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=SNIPPET_TIMEOUT_S, check=False,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
  assert result.returncode == 0, f"{name}:{line} failed:\n{result.stderr[-3000:]}"


def test_docs_have_python_snippets_and_markers_parse():
  snippets = python_snippets()
  assert snippets
  code = "x = f(epochs=100, steps_per_epoch=8)  # docs-test: epochs=2, steps_per_epoch=1"
  assert as_tested(code) == "x = f(epochs=2, steps_per_epoch=1)\n"
  for snippet in snippets:
    name, line, code = snippet.values
    assert compile(as_tested(code), f"{name}:{line}", "exec")
    skip_reason(code)
