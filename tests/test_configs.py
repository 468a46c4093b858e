"""Every flagfile in configs/ parses, validates and says how to run it."""

import glob
import json
import os
import subprocess
import sys

import pytest

from tests import helpers

CONFIGS = sorted(glob.glob(os.path.join(helpers.ROOT, "configs", "*.flags")))
PAPER_CONFIGS = ("imagenet_lt", "imagenet_lt_cbd", "inaturalist2017", "inaturalist2018",
                 "places_lt", "cifar100_lt", "places_lt_pretrained",
                 "imagenet_lt_foundation_teacher", "imagenet_lt_lift", "places_lt_lift",
                 "inaturalist2018_lift", "imagenet_lt_lift_cbd")

# Parses each flagfile from the project root (absl resolves nested --flagfile paths from the
# current directory), in one fresh process so the test's own flags stay untouched.
_PARSE_ALL = """
import json, sys
from cbd_tf import flags
results = {}
for path in sys.argv[1:]:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["train", "--flagfile=" + path, "--workdir=/tmp/cbd_config_check"])
  results[path] = flags.config_from_flags().validate().to_dict()
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def parsed():
  relative = [os.path.relpath(path, helpers.ROOT) for path in CONFIGS]
  result = subprocess.run(
      [sys.executable, "-c", _PARSE_ALL, *relative], cwd=helpers.ROOT, capture_output=True,
      text=True, timeout=300, check=False,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr[-3000:]
  values = json.loads(result.stdout.strip().splitlines()[-1])
  return {os.path.basename(path)[:-len(".flags")]: config for path, config in values.items()}


def test_every_config_parses_and_validates(parsed):
  from cbd_tf.data import sources  # pylint: disable=import-outside-toplevel
  from cbd_tf.models import backbones  # pylint: disable=import-outside-toplevel
  assert set(PAPER_CONFIGS) <= set(parsed)
  for config in parsed.values():
    sources.check_dataset_name(config["data"]["dataset"])
    backbones.check_backbone_name(config["model"]["backbone"])
    for teacher in config["distill"]["teachers"]:
      if teacher.startswith("keras_hub:"):
        backbones.check_backbone_name(teacher)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_config_starts_with_command_expected_top1_and_hardware(name):
  with open(os.path.join(helpers.ROOT, "configs", f"{name}.flags")) as f:
    header = []
    for line in f:
      if not line.startswith("#"):
        break
      header.append(line)
  text = "".join(header)
  assert header and f"python -m cbd_tf.train --flagfile=configs/{name}.flags" in text
  assert "Expected top-1" in text and "Hardware" in text


def test_imagenet_lt_is_the_paper_recipe(parsed):
  config = parsed["imagenet_lt"]
  assert config["stage"] == "pipeline" and config["data"]["dataset"] == "imagenet_lt"
  assert config["model"]["backbone"] == "resnet50" and config["model"]["cosine_scale"] == 20
  assert config["distill"]["teacher_specs"] == ["vanilla:1", "vanilla:2", "jitter:1", "jitter:2"]
  assert config["distill"]["alpha"] == 0.4 and config["distill"]["beta"] == 100
  assert config["data"]["batch_size"] == 128 and config["data"]["image_size"] == 224
  assert config["data"]["crop_min_area"] == 0.05 and config["data"]["eval_crop_fraction"] == 0.875
  optimizer = config["optimizer"]
  assert (optimizer["learning_rate"], optimizer["momentum"]) == (0.1, 0.9)
  assert (optimizer["epochs"], optimizer["weight_decay"]) == (90, 5e-4)
  assert optimizer["warmup_epochs"] == 0
  # Per-replica BatchNorm and the official sampling stream, as the paper recipe documents.
  assert config["distribute"]["sync_batchnorm"] is False
  for name in ("imagenet_lt", "imagenet_lt_cbd", "inaturalist2017", "inaturalist2018"):
    assert parsed[name]["data"]["sampling_method"] == "resample", name
  assert config["data"]["augmentation"] == "standard" and config["data"]["randaugment"] is False
  assert parsed["imagenet_lt_cbd"]["distill"]["teacher_specs"] == ["vanilla:1"]
  assert parsed["imagenet_lt_cbd"]["optimizer"] == optimizer


@pytest.mark.parametrize("name, dataset, epochs, weight_decay, backbone", [
    ("inaturalist2018", "inaturalist2018", 200, 2e-4, "resnet50"),
    ("inaturalist2017", "inaturalist2017", 200, 2e-4, "resnet50"),
    ("places_lt", "places_lt", 90, 5e-4, "resnet50"),
    ("cifar100_lt", "cifar100_lt", 200, 2e-4, "resnet32"),
])
def test_dataset_configs(parsed, name, dataset, epochs, weight_decay, backbone):
  config = parsed[name]
  assert config["data"]["dataset"] == dataset and config["model"]["backbone"] == backbone
  assert config["optimizer"]["epochs"] == epochs
  assert config["optimizer"]["weight_decay"] == weight_decay
  # Shared by inclusion, not copied.
  assert len(config["distill"]["teacher_specs"]) == 4 and config["distill"]["beta"] == 100
  with open(os.path.join(helpers.ROOT, "configs", f"{name}.flags")) as f:
    assert "--flagfile=configs/common/paper_recipe.flags" in f.read()


def test_cifar100_lt_uses_cifar_sizes(parsed):
  data = parsed["cifar100_lt"]["data"]
  assert data["image_size"] == 32 and data["imbalance_ratio"] == 100
  assert data["eval_crop_fraction"] == 1.0


def test_places_lt_pretrained_is_oltrs_representation_recipe(parsed):
  # OLTR config/Places_LT/stage_1.py: 30 epochs, batch 128, classifier lr 0.1, feature lr
  # 0.001, PyTorch weight decay 5e-4 (= 1e-3 in the official CBD form), ImageNet ResNet-152.
  config = parsed["places_lt_pretrained"]
  assert config["model"]["backbone"] == "keras_hub:resnet_152_imagenet"
  assert config["data"]["batch_size"] == 128 and config["optimizer"]["epochs"] == 30
  assert config["optimizer"]["learning_rate"] * 128 / 256 == 0.1
  assert config["model"]["backbone_learning_rate_multiplier"] * 0.1 == pytest.approx(0.001)
  assert config["optimizer"]["weight_decay"] == 1e-3 and config["optimizer"]["warmup_epochs"] == 0
  teacher = parsed["imagenet_lt_foundation_teacher"]
  assert teacher["stage"] == "student" and teacher["distill"]["teachers"] == [
      "keras_hub:dinov2_base"]
  assert teacher["model"]["backbone"] == "resnet50"


@pytest.mark.parametrize("name, dataset, epochs", [
    ("imagenet_lt_lift", "imagenet_lt", 10), ("places_lt_lift", "places_lt", 10),
    ("inaturalist2018_lift", "inaturalist2018", 20)])
def test_lift_configs_are_lifts_recipe(parsed, name, dataset, epochs):
  # LIFT utils/config.py and configs/model/clip_vit_b16.yaml: lr 0.01, weight_decay 5e-4
  # (torch.optim.SGD: gradient wd * w), momentum 0.9, batch_size 128, num_epochs 10 (20 on
  # iNaturalist by its command line), scale 25, loss_type "LA" (tau 1), init_head "text_feat"
  # with prompt "a photo of a {}.", adaptformer, resolution 224, RandomResizedCrop's scale
  # (0.08, 1), prec "amp", tte fivecrop.
  config = parsed[name]
  assert config["stage"] == "teacher" and config["data"]["dataset"] == dataset
  assert config["optimizer"]["epochs"] == epochs
  assert config["model"]["backbone"] == "keras_hub:clip_vit_base_patch16"
  assert config["model"]["backbone_tuning"] == "adaptformer"
  assert config["model"]["adapter_rank"] == 0  # LIFT's rule
  assert (config["model"]["head"], config["model"]["cosine_scale"]) == ("cosine", 25)
  assert config["model"]["head_init"] == "text"
  assert config["model"]["class_prompt"] == "a photo of a {}."
  assert config["long_tail"]["loss"] == "logit_adjusted"
  assert config["long_tail"]["logit_adjust_tau"] == 1.0
  assert config["data"]["batch_size"] == 128 and config["data"]["image_size"] == 224
  assert config["optimizer"]["learning_rate"] * 128 / 256 == pytest.approx(0.01)
  # torch's gradient wd * w is 0.5 * wd' * w in the official CBD form: wd' = 2 * 5e-4.
  assert config["optimizer"]["weight_decay"] == pytest.approx(2 * 5e-4)
  assert config["optimizer"]["momentum"] == 0.9
  assert config["optimizer"]["momentum_update"] == "official"  # torch's buf = mu * buf + g
  assert config["optimizer"]["warmup_epochs"] == 0
  assert config["data"]["crop_min_area"] == 0.08 and config["data"]["test_time_crops"] == 5
  assert config["distribute"]["mixed_precision"] == "float16"
  assert config["data"]["sampling"] == "instance"


def test_lift_cbd_distils_into_a_class_balanced_resnet50(parsed):
  config = parsed["imagenet_lt_lift_cbd"]
  assert config["stage"] == "student" and config["model"]["backbone"] == "resnet50"
  assert config["model"]["backbone_tuning"] == "full"
  assert config["optimizer"] == parsed["imagenet_lt"]["optimizer"]
  with open(os.path.join(helpers.ROOT, "configs", "imagenet_lt_lift_cbd.flags")) as f:
    assert "--flagfile=configs/imagenet_lt_lift.flags" in f.read()
