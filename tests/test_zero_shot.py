"""Classifiers from text in runs: readable class names, --head_init=text on a teacher (its
head starts as the text embeddings), --stage=zero_shot through the command line (evaluated
and exported, then evaluated and exported again with its preset gone), the one-line errors
before any work, and the zero-shot row of tools/compare.py. The text embeddings and logits
themselves are checked against KerasHub in tests/models/test_text_classifier.py."""

import importlib.util
import json
import os
import shutil
import sys

import keras
import numpy as np
import pytest

from cbd_tf import config as config_lib
from cbd_tf import pretrained, run_dir, run_models, stage_registry, training
from cbd_tf.data import class_names, sources
from cbd_tf.data.source_types import Source, Split
from cbd_tf.stages import teacher
from tests import fakes, helpers
from tests.models.test_text_classifier import NAMES, keras_hub_text_weights
from tests.test_pretrained_runs import offline_environment

IMAGE_SIZE = 16


def source_named(name, names):
  labels = np.arange(len(names))
  return Source(name=name, train=Split(np.zeros((len(names), 2, 2, 3), np.uint8), labels),
                test=Split(np.zeros((len(names), 2, 2, 3), np.uint8), labels),
                class_names=tuple(names))


def data_config(**changes):
  return config_lib.DataConfig(**changes)


def test_class_names_are_readable_and_imagenet_and_places_take_the_bundled_lists(tmp_path):
  read = lambda source, **data: class_names.class_names(source, data_config(**data))
  assert read(source_named("image_folder", ["great_white_shark", "eel"])) == (
      "great white shark", "eel")
  # iNaturalist's TFDS label names are its species names already.
  assert read(source_named("inaturalist2018", ["Hermodice carunculata"])) == (
      "Hermodice carunculata",)
  # ImageNet: TFDS's labels are the sorted synset ids; CLIP's names in that order.
  import tensorflow_datasets  # pylint: disable=import-outside-toplevel
  tfds_root = os.path.dirname(tensorflow_datasets.__file__)
  with open(os.path.join(tfds_root, "datasets", "imagenet2012", "labels.txt")) as f:
    synsets = f.read().split()
  imagenet = read(source_named("imagenet_lt", synsets))
  assert len(imagenet) == 1000 and imagenet[:2] == ("tench", "goldfish")
  assert synsets[imagenet.index("Golden Retriever")] == "n02099601"
  assert synsets[imagenet.index("tiger shark")] == "n01491361"
  # Places-LT: the Places365 categories in TFDS's order, as LIFT writes them.
  with open(os.path.join(tfds_root, "image_classification", "categories_places365.txt")) as f:
    places365 = f.read().split()
  places = read(source_named("places_lt", [str(label) for label in range(365)]))
  assert places[8] == "apartment building-outdoor"  # LIFT's prompt: "_" only becomes " "
  assert [name.replace(" ", "_").replace("-", "/") for name in places] == places365
  with pytest.raises(ValueError, match=r"^the bundled imagenet_lt list=.* has 1000 names, the "
                                       r"data set 3 classes$"):
    read(source_named("imagenet_lt", ["a", "b", "c"]))


def test_class_names_file_is_read_as_written_and_must_fit(tmp_path):
  source = source_named("image_folder", ["c0", "c1", "c2"])
  path = fakes.write_file(tmp_path / "names.txt", b"tabby_cat\nsea eel \ndog\n\n")
  assert class_names.class_names(source, data_config(class_names_file=path)) == (
      "tabby_cat", "sea eel", "dog")
  short = fakes.write_file(tmp_path / "short.txt", b"cat\ndog\n")
  with pytest.raises(ValueError, match=f"^--class_names_file='{short}' has 2 names, the data "
                                       "set 3 classes$"):
    class_names.class_names(source, data_config(class_names_file=short))
  blank = fakes.write_file(tmp_path / "blank.txt", b"cat\n\ndog\n")
  with pytest.raises(ValueError, match=f"^--class_names_file='{blank}': line 2 is blank$"):
    class_names.class_names(source, data_config(class_names_file=blank))
  with pytest.raises(ValueError, match="no such file$"):
    class_names.class_names(source, data_config(class_names_file=str(tmp_path / "none.txt")))


@pytest.mark.parametrize("argv, message", [
    (("--head_init=text", "--backbone=resnet32"),
     "--head_init=text needs a keras_hub CLIP or SigLIP preset (--backbone=keras_hub:PRESET), "
     "not --backbone=resnet32"),
    (("--stage=zero_shot", "--backbone=resnet50"),
     "--stage=zero_shot needs a keras_hub CLIP or SigLIP preset (--backbone=keras_hub:PRESET), "
     "not --backbone=resnet50"),
    (("--stage=pipeline", "--head_init=text", "--backbone=keras_hub:clip", "--head=linear"),
     "--head_init=text needs --head=cosine (the text embeddings are its class weights), not "
     "--head=linear"),
])
def test_a_head_from_text_without_a_preset_or_the_cosine_head_stops_in_one_line(argv, message):
  with pytest.raises(ValueError) as error:
    helpers.config_from_argv(*argv, "--workdir=/tmp/x")
  assert str(error.value) == message
  # A student's head sits on its projection: --head_init=text leaves it as it is.
  helpers.config_from_argv("--stage=student", "--head_init=text", "--teachers=/tmp/t",
                           "--workdir=/tmp/x")


@pytest.fixture(scope="module")
def presets(tmp_path_factory):
  root = tmp_path_factory.mktemp("presets")
  return {family: fakes.write_keras_hub_preset(root / family, family, IMAGE_SIZE, seed=5)
          for family in ("clip", "siglip", "resnet")}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
  return fakes.write_image_folder(tmp_path_factory.mktemp("images"), classes=NAMES)


def text_config(workdir, image_folder, preset, **model):
  return helpers.tiny_run_config(
      workdir, stage="teacher", data={"dataset": "image_folder", "data_dir": image_folder},
      model={"backbone": f"keras_hub:{preset}", "head_init": "text", **model})


def head_kernel(classifier):
  return keras.ops.convert_to_numpy(classifier.head.kernel).T


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_head_init_text_starts_a_teacher_from_the_text_embeddings(presets, image_folder,
                                                                   tmp_path, family):
  config = text_config(tmp_path / "run", image_folder, presets[family],
                       class_prompt="a photo of the {}.")
  source = sources.load_source(config.data)
  expected = keras_hub_text_weights(presets[family], family, ["a photo of the {}."])
  # The teacher stage's own build: the step-0 head is the text embeddings.
  built = teacher.build(config, source)
  np.testing.assert_allclose(head_kernel(built.classifier), expected, rtol=1e-5, atol=1e-6)
  assert built.classifier.cosine_scale == config.model.cosine_scale  # the run's, not CLIP's
  # A run that resumes takes its head from its checkpoint, and needs no text.
  resumed = text_config(tmp_path / "resumed", image_folder, presets[family])
  fakes.write_file(os.path.join(resumed.workdir, run_dir.CHECKPOINTS, "checkpoint"),
                   b'model_checkpoint_path: "ckpt-1"\nall_model_checkpoint_paths: "ckpt-1"\n')
  kernel = head_kernel(pretrained.build_starting_classifier(resumed, 3, source=source))
  assert not np.allclose(kernel, expected, atol=1e-3)
  # A student's head sits on its projection: it starts random.
  student = resumed.replace(workdir=str(tmp_path / "student"), model={"projection_dim": 8})
  assert pretrained.build_starting_classifier(student, 3, source=source).projection is not None


def test_zero_shot_checks_its_preset_and_class_names_before_any_work(presets, image_folder,
                                                                     tmp_path):
  config = text_config(tmp_path / "zs", image_folder, presets["resnet"]).replace(
      stage="zero_shot", model={"head_init": "random"})
  with pytest.raises(ValueError, match=f"^keras_hub preset '{presets['resnet']}' is a "
                                       "ResNetBackbone, not CLIP or SigLIP"):
    training.validate_run(config)
  names = fakes.write_file(tmp_path / "names.txt", b"cat\ndog\n")
  config = config.replace(model={"backbone": f"keras_hub:{presets['clip']}"},
                          data={"class_names_file": names})
  with pytest.raises(ValueError, match=f"^--class_names_file='{names}' has 2 names, the data "
                                       "set 3 classes$"):
    training.validate_run(config)
  assert not os.path.exists(os.path.join(config.workdir, run_dir.FINAL_WEIGHTS))


def test_zero_shot_stage_is_registered_as_a_non_training_clip_row():
  entry = stage_registry.get_stage("zero_shot")
  assert (entry.trains, entry.needs, entry.recipe, entry.text_head) == (
      False, "", "CLIP", stage_registry.TEXT_HEAD_ALWAYS)
  spec = importlib.util.spec_from_file_location(
      "compare_zero_shot", os.path.join(helpers.ROOT, "tools", "compare.py"))
  compare = importlib.util.module_from_spec(spec)
  sys.modules["compare_zero_shot"] = compare  # dataclasses look their module up there
  spec.loader.exec_module(compare)
  run = compare.RUNS[compare.METHODS["zero-shot (CLIP / SigLIP text head)"]]
  assert run.text and run.recipe == "CLIP" and compare.RECIPES["CLIP"]({}) == []
  assert run.flags("/s", 2, {})[:2] == ["--stage=zero_shot", "--seed=2"]


def cli(module, *args, env=None):
  return helpers.run_module(module, *args, env=env)


@pytest.mark.slow
def test_zero_shot_run_classifies_as_clip_evaluates_and_exports_offline(tmp_path):
  preset = fakes.write_keras_hub_preset(tmp_path / "presets" / "clip", "clip", IMAGE_SIZE, 7)
  resnet = fakes.write_keras_hub_preset(tmp_path / "presets" / "resnet", "resnet", IMAGE_SIZE)
  images = fakes.write_image_folder(tmp_path / "images", classes=NAMES)
  workdir = str(tmp_path / "zero_shot")
  args = ("--flagfile=configs/smoke.flags", "--stage=zero_shot", "--dataset=image_folder",
          f"--data_dir={images}")
  refused = cli("cbd_tf.train", *args, f"--backbone=keras_hub:{resnet}",
                f"--workdir={tmp_path / 'refused'}")
  assert refused.returncode == 1
  assert refused.stderr.strip().splitlines()[-1] == (
      f"cbd_tf.train: error: keras_hub preset {resnet!r} is a ResNetBackbone, not CLIP or "
      "SigLIP: it has no text encoder for a classifier from text (--head_init=text, "
      "--stage=zero_shot)")

  result = cli("cbd_tf.train", *args, f"--backbone=keras_hub:{preset}", f"--workdir={workdir}",
               f"--export_dir={tmp_path / 'export'}")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, run_dir.CONFIG)) as f:
    saved = json.load(f)["model"]
  import keras_hub  # pylint: disable=import-outside-toplevel
  backbone = keras_hub.models.Backbone.from_preset(preset)
  scale = float(np.exp(backbone.clip_head.logit_scale.numpy()))
  assert saved["cosine_scale"] == pytest.approx(scale, rel=1e-6)
  assert (saved["head"], saved["head_init"]) == ("cosine", "text")
  # CLIP's logits, written out from KerasHub while the preset is there.
  pixels = np.random.default_rng(2).uniform(size=(3, 20, 20, 3)).astype(np.float32)
  vision = backbone.get_vision_embeddings(
      keras_hub.layers.ImageConverter.from_preset(preset)(pixels * 255.0))
  vision = np.asarray(vision) / np.linalg.norm(vision, axis=-1, keepdims=True)
  expected = scale * vision @ keras_hub_text_weights(preset, "clip", ["a photo of a {}."]).T
  with open(os.path.join(workdir, run_dir.METRICS)) as f:
    evaluated = json.load(f)

  shutil.rmtree(tmp_path / "presets")
  model, _ = run_models.load_classifier(workdir)
  np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, rtol=1e-4, atol=1e-4)
  env = offline_environment(tmp_path)
  again = cli("cbd_tf.evaluate", f"--workdir={workdir}", env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  with open(os.path.join(workdir, run_dir.METRICS)) as f:
    assert json.load(f)["per_class"] == pytest.approx(evaluated["per_class"])
  exported = cli("cbd_tf.export", f"--workdir={workdir}", f"--export_dir={tmp_path / 'again'}",
                 env=env)
  assert exported.returncode == 0, exported.stderr[-3000:]
  assert os.path.exists(tmp_path / "again" / run_dir.SAVED_MODEL)
