import pytest

from cbd_tf import config as config_lib


def valid_config(**changes):
  return config_lib.Config(workdir="/tmp/x").replace(**changes)


def test_round_trip_through_dict(tmp_path):
  config = valid_config(stage="student", distill={"teachers": ("a", "b"), "alpha": 0.3},
                        data={"image_size": 32})
  path = str(tmp_path / "config.json")
  config.save(path)
  assert config_lib.Config.load(path) == config


def test_stage_default_sampling():
  assert valid_config(stage="teacher").sampling == "instance"
  assert valid_config(stage="student").sampling == "class_balanced"
  assert valid_config(stage="teacher", data={"sampling": "sqrt"}).sampling == "sqrt"


@pytest.mark.parametrize("changes, message", [
    ({"distill": {"alpha": 1.5}}, "distill_alpha must be in [0, 1]"),
    ({"distill": {"alpha": -0.1}}, "distill_alpha must be in [0, 1]"),
    ({"distill": {"beta": -1.0}}, "distill_beta must be >= 0"),
    ({"stage": "student"}, "--stage=student needs --teachers"),
    ({"stage": "distill"}, "unknown stage 'distill'"),
    ({"workdir": ""}, "--workdir is required"),
    ({"optimizer": {"epochs": 0}}, "epochs must be positive"),
    ({"stage": "pipeline", "distill": {"teacher_specs": ("vanilla:1", "vanilla:1")}},
     "repeats a teacher"),
])
def test_validate_names_the_problem(changes, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
    valid_config(**changes).validate()


def test_teacher_specs():
  assert config_lib.parse_teacher_spec("vanilla:2") == ("standard", 2)
  assert config_lib.parse_teacher_spec("jitter:1") == ("jitter", 1)
  assert config_lib.teacher_run_name("jitter:1") == "jitter_1"
  for bad in ("vanilla", "sepia:1", "jitter:x"):
    with pytest.raises(ValueError, match="teacher spec"):
      config_lib.parse_teacher_spec(bad)


def test_empty_cache_dir_in_config_json_resolves_to_the_run():
  # config.json files written from Python before the cache dir was resolved in Config.
  values = valid_config().to_dict()
  values["data"]["cache_dir"] = ""
  assert config_lib.Config.from_dict(values).data.cache_dir == "/tmp/x/data_cache"


def test_config_json_from_before_max_image_pixels_moved_to_data_still_loads():
  values = config_lib.Config(workdir="w").to_dict()
  del values["data"]["max_image_pixels"]
  values["output"]["max_image_pixels"] = 1234
  config = config_lib.Config.from_dict(values)
  assert config.data.max_image_pixels == 1234 and not hasattr(config.output, "max_image_pixels")


def test_config_json_with_freeze_backbone_loads_as_backbone_tuning():
  for frozen, tuning in ((True, "frozen"), (False, "full")):
    values = config_lib.Config(workdir="w").to_dict()
    del values["model"]["backbone_tuning"]
    values["model"]["freeze_backbone"] = frozen
    assert config_lib.Config.from_dict(values).model.backbone_tuning == tuning
