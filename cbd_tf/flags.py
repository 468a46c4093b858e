"""Every command-line flag, and the one function that turns them into a Config.

The flags are generated from the fields of cbd_tf/config.py, which carry each setting's
flag name, default and help: a new setting is one new field there. By field type:
bool -> DEFINE_bool; str -> DEFINE_enum when the field lists its choices, else
DEFINE_string; int / float (or None: not given) -> DEFINE_integer / DEFINE_float;
tuple -> DEFINE_list.

Flagfiles may include other flagfiles (`--flagfile=base.flags` inside one); flags given
on the command line after `--flagfile` override it.
"""

from __future__ import annotations

import dataclasses
import sys
import typing

from absl import app, flags

from cbd_tf import config as config_lib
from cbd_tf import console, errors, stage_registry

# Config section -> its dataclass; "" holds the top-level fields (stage, workdir, seed).
SECTIONS = {"": config_lib.Config, "data": config_lib.DataConfig,
            "model": config_lib.ModelConfig, "optimizer": config_lib.OptimizerConfig,
            "distill": config_lib.DistillConfig, "output": config_lib.OutputConfig,
            "distribute": config_lib.DistributeConfig, "long_tail": config_lib.LongTailConfig}

_DEFINE_BY_TYPE = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


def _define(field: dataclasses.Field, field_type: typing.Any) -> None:
  name, help_text = field.metadata["flag"], field.metadata["help"]
  default = None if field.metadata["required"] else field.default
  choices = field.metadata["choices"]
  if field_type is bool:
    flags.DEFINE_bool(name, default, help_text)
  elif typing.get_origin(field_type) is tuple:
    flags.DEFINE_list(name, [str(value) for value in default], help_text)
  elif choices:
    flags.DEFINE_enum(name, default, list(choices), help_text)
  else:
    # `float | None`: the flag's default None means "not given".
    arguments = [t for t in typing.get_args(field_type) if t is not type(None)] or [field_type]
    _DEFINE_BY_TYPE[arguments[0]](name, default, help_text)


def _flag_fields():
  """(section name, field, resolved type) of every field a flag sets."""
  for section, section_class in SECTIONS.items():
    types = typing.get_type_hints(section_class)
    for field in config_lib.flag_fields(section_class):
      yield section, field, types[field.name]


for _, _field, _field_type in _flag_fields():
  _define(_field, _field_type)

# A flag of one CLI, not a setting of a run.
flags.DEFINE_string("saved_model", None, "cbd_tf.evaluate: evaluate this SavedModel export.")
# Flags of every command (cbd_tf/console.py, cbd_tf/errors.py): how it talks, not what it does.
flags.DEFINE_enum(console.FLAG, None, list(console.VERBOSITIES),
                  "TensorFlow's own log lines (and other libraries') shown: info brings back "
                  "TensorFlow's start-up and INFO lines (start-up lines once). Default: what "
                  "TF_CPP_MIN_LOG_LEVEL says, else error. cbd_tf's own lines always show.")
flags.DEFINE_bool("traceback", False, "A user error (a preset that cannot be downloaded, a "
                  "damaged file, a held lock, ...) stops the command with its traceback, not "
                  "one line.")
COMMAND_FLAGS = {console.FLAG, "traceback"}
# Older names, kept for older flagfiles: flag -> (setting flag, value it means).
ALIASES = {"freeze_backbone": ("backbone_tuning", "frozen")}
flags.DEFINE_bool("freeze_backbone", False, "Same as --backbone_tuning=frozen.")
# Renamed flags: old name -> new name. Given, the old name stops the command naming the new.
RENAMED = {"output": "export_dir"}
for _old, _new in RENAMED.items():
  flags.DEFINE_string(_old, None, f"Renamed: --{_new}.")

FLAGS = flags.FLAGS


_SECTION_TITLES = {"": "run", "long_tail": "long-tail baselines"}


def help_text(usage: str, names: set[str] | None = None) -> str:
  """`usage`, then cbd_tf's flags (`names` only, if given) grouped by config section, each
  with its default and help: what `--help` prints (absl's lists only the main module's)."""
  groups: dict[str, list[str]] = {}
  for section, field, _ in _flag_fields():
    name = field.metadata["flag"]
    if names is None or name in names:
      default = FLAGS[name].default
      readers = stage_registry.stages_reading(name)
      stages = f" [--stage={' / '.join(readers)}]" if readers else ""
      groups.setdefault(_SECTION_TITLES.get(section, section), []).append(
          f"  --{name} (default: {default!r}){stages}\n      {FLAGS[name].help}")
  for name in sorted((names or set()) - {f.metadata["flag"] for _, f, _ in _flag_fields()}):
    groups.setdefault("command", []).append(f"  --{name}\n      {FLAGS[name].help}")
  for name in sorted(COMMAND_FLAGS):
    groups.setdefault("console", []).append(
        f"  --{name} (default: {FLAGS[name].default!r})\n      {FLAGS[name].help}")
  sections = [f"{title}:\n" + "\n".join(lines) for title, lines in groups.items()]
  return usage.strip() + "\n\n" + "\n\n".join(sections) + \
      "\n\n--flagfile=FILE reads flags from a file; --helpfull lists absl's own flags too.\n"


def run_cli(main, usage: str, names: set[str] | None, program: str) -> None:
  """absl's app.run, with --help / -h printing help_text, the console --tf_verbosity asks
  for, and a user error (errors.UserError) as one line "`program`: error: ..."."""
  if any(argument in ("--help", "-h") for argument in sys.argv[1:]):
    print(help_text(usage, names))
    sys.exit(0)

  def run_main(argv):
    console.configure(FLAGS[console.FLAG].value)
    try:
      main(argv)
    except errors.UserError as error:
      exit_with_error(program, error)
  app.run(run_main)


def exit_with_error(program: str, error: Exception) -> typing.NoReturn:
  """Stops the command with the one line "`program`: error: `error`"; with --traceback,
  raises `error` (call it in the except clause that caught it)."""
  if FLAGS.traceback:
    raise error
  sys.exit(f"{program}: error: {error}")


def unexpected_flag_error(program: str, allowed: set[str]) -> str | None:
  """The one-line error of `program` (evaluate, export) if a cbd_tf flag it does not read was
  given on the command line or in a flagfile: it must not accept the flag and ignore it."""
  defined = FLAGS._flags().items()  # pylint: disable=protected-access
  renamed = renamed_flag_error()
  if renamed:
    return f"cbd_tf.{program}: error: {renamed}"
  unexpected = sorted(name for name, flag in defined
                      if name == flag.name and flag.present
                      and name not in allowed | COMMAND_FLAGS
                      and FLAGS.find_module_defining_flag(name) == __name__)
  if not unexpected:
    return None
  return (f"cbd_tf.{program}: error: --{unexpected[0]} is not a flag of {program}, which takes "
          f"{', '.join('--' + name for name in sorted(allowed))}")


def renamed_flag_error() -> str | None:
  """"--old is now --new" for the first renamed flag given, else None."""
  for old, new in RENAMED.items():
    if FLAGS[old].present:
      return f"--{old} is now --{new}"
  return None


def config_from_flags() -> config_lib.Config:
  """The Config the parsed flags describe (not yet validated)."""
  renamed = renamed_flag_error()
  if renamed:
    raise ValueError(renamed)
  values = {section: {} for section in SECTIONS}
  for section, field, field_type in _flag_fields():
    value = FLAGS[field.metadata["flag"]].value
    if value is None and field.metadata["required"]:
      value = field.default  # not given; validate() names the flag
    elif typing.get_origin(field_type) is tuple:
      value = _tuple(field.metadata["flag"], value, typing.get_args(field_type)[0])
    values[section][field.name] = value
  for alias, (name, meaning) in ALIASES.items():
    if FLAGS[alias].value:
      if FLAGS[name].present and FLAGS[name].value != meaning:
        raise ValueError(f"--{alias} means --{name}={meaning}, and --{name}="
                         f"{FLAGS[name].value} was given too")
      section = next(section for section, field, _ in _flag_fields()
                     if field.metadata["flag"] == name)
      values[section][name] = meaning
  top_level = values.pop("")
  return config_lib.Config(
      **top_level, **{section: SECTIONS[section](**fields) for section, fields in values.items()})


def _tuple(name: str, values: list[str], element_type: type) -> tuple:
  try:
    return tuple(element_type(value) for value in values)
  except ValueError:  # only integer lists can fail
    raise ValueError(f"--{name} must be integers, got {','.join(values)}") from None
