"""The flags generated from cbd_tf/config.py are the CLI's flags, and map onto the Config."""

import dataclasses
import subprocess
import sys
import typing

import pytest
from absl import flags as absl_flags

from cbd_tf import config as config_lib
from cbd_tf import flags
from tests import helpers

# The command line users' flagfiles and scripts rely on (name, kind, default): no flag may
# disappear or change its default without a test changing here; new flags are added in
# order. Kind "string" includes enum flags.
CLI_FLAGS = [
    ("adapter_rank", "integer", 0),
    ("augmentation", "string", "standard"),
    ("backbone", "string", "resnet50"),
    ("backbone_from", "string", ""),
    ("backbone_learning_rate_multiplier", "float", 1.0),
    ("backbone_tuning", "string", "full"),
    ("batch_size", "integer", 128),
    ("checkpoint_every_steps", "integer", 100),
    ("class_balanced_beta", "float", 0.9999),
    ("class_balanced_focal_beta", "float", 0.999),
    ("class_balanced_focal_gamma", "float", 0.5),
    ("class_names_file", "string", ""),
    ("class_prompt", "string", "a photo of a {}."),
    ("cosine_scale", "float", 20.0),
    ("cpu_devices", "integer", 0),
    ("crop_min_area", "float", 0.05),
    ("data_cache_dir", "string", ""),
    ("data_dir", "string", ""),
    ("dataset", "string", "mnist_lt"),
    ("decoupled_batchnorm", "string", "frozen"),
    ("decoupled_epochs", "integer", None),
    ("decoupled_warmup_epochs", "float", 0.0),
    ("deterministic", "bool", False),
    ("distill_alpha", "float", 0.4),
    ("distill_beta", "float", 100.0),
    ("drw_epoch", "integer", -1),
    ("epochs", "integer", 90),
    ("eval_batch_size", "integer", 256),
    ("eval_crop_fraction", "float", 0.875),
    ("eval_every_epochs", "integer", 1),
    ("export_dir", "string", ""),
    ("focal_gamma", "float", 1.0),
    ("freeze_backbone", "bool", False),
    ("head", "string", "cosine"),
    ("head_init", "string", "random"),
    ("horizontal_flip", "bool", True),
    ("image_size", "integer", 224),
    ("imbalance_ratio", "float", 100.0),
    ("init_from", "string", ""),
    ("ldam_max_margin", "float", 0.5),
    ("ldam_scale", "float", 30.0),
    ("learning_rate", "float", 0.1),
    ("log_every_steps", "integer", 10),
    ("logit_adjust_tau", "float", 1.0),
    ("loss", "string", "ce"),
    ("lr_schedule", "string", "cosine"),
    ("manual_dir", "string", ""),
    ("max_image_pixels", "integer", 89_478_485),
    ("max_request_images", "integer", 64),
    ("mixed_precision", "string", ""),
    ("momentum", "float", 0.9),
    ("momentum_update", "string", "keras"),
    ("ncm_distance", "string", "euclidean"),
    ("ncm_features", "string", "cl2n"),
    ("num_classes", "integer", 0),
    ("output", "string", None),
    ("posthoc_tau", "string", "0"),
    ("profile_batches", "list", []),
    ("randaugment", "bool", False),
    ("randaugment_magnitude", "float", 9.0),
    ("randaugment_num_ops", "integer", 2),
    ("sampling", "string", ""),
    ("sampling_method", "string", "auto"),
    ("saved_model", "string", None),
    ("seed", "integer", 0),
    ("stage", "string", "teacher"),
    ("steps_per_epoch", "integer", 0),
    ("strategy", "string", "auto"),
    ("student_backbone", "string", ""),
    ("sync_batchnorm", "bool", False),
    ("tau", "float", None),
    ("teacher_features", "string", ""),
    ("teacher_sampling", "string", "instance"),
    ("teacher_specs", "list", ["vanilla:1", "vanilla:2"]),
    ("teacher_views", "integer", 0),
    ("teachers", "list", []),
    ("test_list", "string", ""),
    ("test_time_crops", "integer", 1),
    ("tf_verbosity", "string", None),
    ("tfrecord_image_key", "string", "image"),
    ("tfrecord_label_key", "string", "label"),
    ("tfrecord_test", "string", ""),
    ("tfrecord_train", "string", ""),
    ("tfrecord_val", "string", ""),
    ("top_k", "integer", 5),
    ("tpu", "string", ""),
    ("traceback", "bool", False),
    ("train_list", "string", ""),
    ("val_list", "string", ""),
    ("validate_images", "bool", True),
    ("warmup_epochs", "float", -1.0),
    ("weight_decay", "float", 0.0005),
    ("workdir", "string", None),
]
_KINDS = {"string": "string", "string enum": "string", "int": "integer", "float": "float",
          "bool": "bool", "comma separated list of strings": "list"}


def _defined_flags():
  """name -> absl Flag, for the flags cbd_tf/flags.py defines (aliases left out)."""
  registered = flags.FLAGS._flags()  # pylint: disable=protected-access
  return {name: flag for name, flag in registered.items()
          if name == flag.name and flags.FLAGS.find_module_defining_flag(name) == flags.__name__}


def _settings():
  """(section object path, field, type) for every field of every config section."""
  for section, section_class in flags.SECTIONS.items():
    types = typing.get_type_hints(section_class)
    for field in dataclasses.fields(section_class):
      if not dataclasses.is_dataclass(types[field.name]):
        yield section, field, types[field.name]


def test_generated_flags_are_the_cli_flags():
  defined = _defined_flags()
  assert sorted(defined) == [name for name, _, _ in CLI_FLAGS]
  for name, kind, default in CLI_FLAGS:
    assert (_KINDS[defined[name].flag_type()], defined[name].default) == (kind, default), name
    assert defined[name].help, name


def test_every_field_is_a_setting_or_a_run_value():
  names = []
  for _, field, _ in _settings():
    assert "flag" in field.metadata and field.metadata["help"], field.name
    if field.metadata["flag"]:
      names.append(field.metadata["flag"])
  assert len(names) == len(set(names))
  run_values = {field.name for _, field, _ in _settings() if not field.metadata["flag"]}
  assert run_values == {"projection_dim", "head_norm_power", "class_scales"}


def test_enum_flags_accept_the_config_choices():
  defined = _defined_flags()
  assert defined["stage"].parser.enum_values == list(config_lib.STAGES)
  assert defined["loss"].parser.enum_values == list(config_lib.LOSSES)
  assert set(defined["augmentation"].parser.enum_values) == {"standard", "jitter", "vanilla"}
  with pytest.raises(absl_flags.IllegalFlagValueError, match="value should be one of"):
    helpers.config_from_argv("--workdir=/w", "--stage=distill")


def _other_value(field, field_type):
  """A command-line value for `field` other than its default, and the field value it gives."""
  choices = [c for c in field.metadata["choices"] if c not in config_lib.AUGMENTATION_ALIASES]
  arguments = [t for t in typing.get_args(field_type) if t is not type(None)]
  if field_type is bool:
    return str(not field.default).lower(), not field.default
  if choices:
    value = next(choice for choice in choices if choice != field.default)
    return value, value
  if typing.get_origin(field_type) is tuple:
    return ("3,9", (3, 9)) if arguments[0] is int else ("a,b", ("a", "b"))
  kind = arguments[0] if arguments else field_type
  if kind is int:
    return str((field.default or 0) + 3), (field.default or 0) + 3
  if kind is float:
    return str((field.default or 0.0) + 0.25), (field.default or 0.0) + 0.25
  return "some_value", "some_value"


def test_each_flag_sets_its_own_field():
  expected, argv = {}, []
  for section, field, field_type in _settings():
    if field.metadata["flag"]:
      text, value = _other_value(field, field_type)
      argv.append(f"--{field.metadata['flag']}={text}")
      expected[(section, field.name)] = value
  config = helpers.config_from_argv(*argv, validate=False)
  for (section, name), value in expected.items():
    assert getattr(getattr(config, section) if section else config, name) == value, name


def test_no_flags_give_the_python_defaults():
  assert helpers.config_from_argv("--workdir=/w") == config_lib.Config(workdir="/w")


def test_cache_dir_is_resolved_the_same_from_the_cli_and_python():
  from_cli = helpers.config_from_argv("--workdir=/w").data.cache_dir
  assert from_cli == config_lib.Config(workdir="/w").data.cache_dir == "/w/data_cache"
  given = helpers.config_from_argv("--workdir=/w", "--data_cache_dir=/shared")
  assert given.data.cache_dir == "/shared"
  # A pipeline's teacher and student runs keep their parent's cache.
  assert config_lib.Config(workdir="/w").replace(workdir="/w/student").data.cache_dir == (
      "/w/data_cache")
  assert config_lib.Config().data.cache_dir == ""  # no workdir: the data layer's temp dir


def test_vanilla_and_standard_name_one_augmentation():
  assert helpers.config_from_argv("--workdir=/w", "--augmentation=vanilla").data.augmentation == (
      "standard")
  assert config_lib.parse_teacher_spec("standard:1") == config_lib.parse_teacher_spec("vanilla:1")
  assert config_lib.teacher_run_name("standard:1") == "vanilla_1"


def test_profile_batches_must_be_integers():
  with pytest.raises(ValueError, match="--profile_batches must be integers, got 2,x"):
    helpers.config_from_argv("--workdir=/w", "--profile_batches=2,x")


def test_config_and_flags_import_no_tensorflow():
  code = ("import sys, cbd_tf.config, cbd_tf.flags, cbd_tf; "
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; "
          "assert 'keras' not in sys.modules, 'keras imported'; "
          "assert sorted(cbd_tf.__all__) == ['CBDDistiller', 'CBDFeatureDistillation', "
          "'Classifier', 'KerasHubBackbone', "
          "'PresetTeacher', 'evaluation_dataset', 'feature_distillation_loss', "
          "'from_arrays', 'from_files', 'load_data', 'load_model', 'load_teachers', "
          "'training_dataset', 'zero_shot_classifier']")
  result = subprocess.run([sys.executable, "-c", code], cwd=helpers.ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr[-2000:]


def test_public_api_resolves_lazily():
  import cbd_tf  # pylint: disable=import-outside-toplevel
  from cbd_tf import distiller, losses  # pylint: disable=import-outside-toplevel
  from cbd_tf.models import classifier  # pylint: disable=import-outside-toplevel
  assert cbd_tf.CBDDistiller is distiller.CBDDistiller
  assert cbd_tf.Classifier is classifier.Classifier
  assert cbd_tf.feature_distillation_loss is losses.feature_distillation_loss
  with pytest.raises(AttributeError, match="no attribute 'Distiller'"):
    getattr(cbd_tf, "Distiller")


def test_help_lists_cbd_tf_flags_by_section():
  text = flags.help_text("usage line")
  assert text.startswith("usage line\n\nrun:\n  --stage (default: 'teacher')")
  for section, name in (("data", "dataset"), ("model", "backbone"), ("optimizer", "epochs"),
                        ("distill", "teachers"), ("long-tail baselines", "loss")):
    assert f"\n{section}:\n" in text and f"\n  --{name} (default: " in text, section
  assert text.index("\ndata:\n") < text.index("--dataset") < text.index("\nmodel:\n")
  evaluate = flags.help_text("", {"workdir", "saved_model"})
  assert "--workdir" in evaluate and "--saved_model" in evaluate and "--epochs" not in evaluate


def test_freeze_backbone_is_backbone_tuning_frozen():
  assert helpers.config_from_argv("--workdir=/w", "--freeze_backbone").model.backbone_tuning == (
      "frozen")
  assert helpers.config_from_argv("--workdir=/w").model.backbone_tuning == "full"
  with pytest.raises(ValueError, match="--freeze_backbone means --backbone_tuning=frozen, and "
                                       "--backbone_tuning=bias was given too"):
    helpers.config_from_argv("--workdir=/w", "--freeze_backbone", "--backbone_tuning=bias")
