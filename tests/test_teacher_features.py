"""Cached teacher features (issue 28): --stage=teacher_features, --teacher_features, and a
live student restricted to the same --teacher_views, which must train the same."""

import os
import shutil

import keras
import numpy as np
import pytest

from cbd_tf import config as config_lib
from cbd_tf import distiller, run_dir, teachers, training
from cbd_tf.data import pipeline, sources, teacher_cache, teacher_views
from cbd_tf.stages import student
from tests import helpers

VIEWS = 2
# float16 keeps 11 significant bits: a cached component of a unit vector is within 2^-11 of
# the float32 one (half a step at 0.5-1, less below).
FLOAT16_STEP = 2.0 ** -11


def _config(workdir, data=None, **sections):
  return helpers.tiny_run_config(workdir, data={"dataset": "mnist_lt", **(data or {})},
                                 **sections)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
  """(teacher run, feature cache of it, source): a tiny teacher, its features of VIEWS views
  of every training image in shards of 256 images (988 images: 4 shards)."""
  root = tmp_path_factory.mktemp("teacher_features")
  teacher = str(root / "teacher")
  training.run(_config(teacher))
  features = str(root / "features")
  config = _features_config(features, teacher)
  source = sources.load_source(config.data)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(teacher_cache, "IMAGES_PER_SHARD", 256)
    result = training.run(config, source)
  assert result["images"] == len(source.train) == 988 and result["views"] == VIEWS
  return teacher, features, source


def _features_config(workdir, *teacher_dirs):
  return _config(workdir, stage="teacher_features",
                 distill={"teachers": teacher_dirs, "teacher_views": VIEWS})


def _live_features(teacher, keys, config):
  """The teachers' features of views `keys`, computed now, in float32."""
  frozen = teachers.load_teachers([teacher])
  batches = pipeline.train_batches(teacher_views.views_of(keys, VIEWS, config.seed),
                                   sources.load_source(config.data).train, config.data,
                                   len(keys))
  images, _, batch_keys = next(iter(batches))
  np.testing.assert_array_equal(batch_keys, keys)
  return distiller.teacher_features(frozen, images).numpy()


def test_the_cache_holds_the_live_teacher_features_of_each_view(cached):
  teacher, features, source = cached
  reader = teacher_cache.FeatureReader(features)
  assert reader.metadata["images_per_shard"] == 256
  assert len(teacher_cache.missing_shards(features, len(source.train), 256)) == 0
  assert os.path.getsize(teacher_cache.shard_path(features, 0)) == 256 * VIEWS * reader.dim * 2
  keys = np.random.default_rng(0).choice(len(source.train) * VIEWS, 32, replace=False)
  live = _live_features(teacher, keys, _config(""))
  rows = reader.rows(keys).astype(np.float32)
  np.testing.assert_allclose(rows, live, rtol=0, atol=FLOAT16_STEP)
  np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3)
  # The two views of an image are different crops, so different features.
  other_view = reader.rows(keys ^ 1).astype(np.float32)
  assert np.abs(other_view - live).max(axis=1).min() > 10 * FLOAT16_STEP
  made = reader.made_from
  assert made["teachers"][0]["weights_sha256"] == teachers.weights_sha256(
      teachers.load_teachers([teacher])[0])
  assert (made["dataset"], made["image_size"], made["views"], made["num_images"]) == (
      "mnist_lt", 16, VIEWS, 988)


def _fit(config, source, steps=3):
  """(per-step logs, student weight updates) of `steps` steps of --stage=student's model."""
  keras.utils.set_random_seed(config.seed)
  built = student.build(config, source)
  initial = [w.numpy() for w in built.classifier.weights]
  built.fit_model.compile(optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
                          weight_decay=5e-4)
  dataset = pipeline.build_train_dataset(source.train, built.config.data, config.sampling,
                                         config.seed, source.num_classes, views=built.views)
  history = built.fit_model.fit(dataset, epochs=steps, steps_per_epoch=1, shuffle=False,
                                verbose=0).history
  return history, [w.numpy() - w0 for w, w0 in zip(built.classifier.weights, initial)]


def test_a_cached_student_trains_as_a_live_one_restricted_to_the_same_views(cached, tmp_path):
  teacher, features, source = cached
  live_config = _config(tmp_path / "live", stage="student",
                        distill={"teachers": (teacher,), "teacher_views": VIEWS})
  cached_config = _config(tmp_path / "cached", stage="student",
                          distill={"teacher_features": features})
  live, live_updates = _fit(live_config, source)
  from_cache, cached_updates = _fit(cached_config, source)
  # Per step: the features differ by float16 rounding only (< 2^-11 a component).
  np.testing.assert_allclose(from_cache["loss_distill"], live["loss_distill"], rtol=2e-3)
  np.testing.assert_allclose(from_cache["loss_ce"], live["loss_ce"], rtol=1e-4)
  np.testing.assert_allclose(from_cache["accuracy"], live["accuracy"])
  # Same start, and the 3 updates agree to 1% of the largest update (measured: 0.12%).
  largest = max(np.abs(u).max() for u in live_updates)
  assert _largest_difference(cached_updates, live_updates) < 0.01 * largest
  # The control: a live student drawing fresh views trains on other images.
  _, fresh_updates = _fit(_config(tmp_path / "fresh", stage="student",
                                  distill={"teachers": (teacher,)}), source)
  assert _largest_difference(fresh_updates, live_updates) > 0.05 * largest


def _largest_difference(updates, others):
  return max(np.abs(u - o).max() for u, o in zip(updates, others))

def test_a_cached_student_needs_no_teacher_and_records_its_cache(cached, tmp_path):
  teacher, features, _ = cached
  copy = str(tmp_path / "features")
  shutil.copytree(features, copy)
  moved = str(tmp_path / "teacher_gone")
  shutil.copytree(teacher, moved)
  config = _config(tmp_path / "student", stage="student",
                   distill={"teacher_features": copy})
  shutil.rmtree(moved)  # not needed: the copy of the cache is all the student reads
  result = training.run(config)
  assert 0 <= result["top1"] <= 1
  saved = config_lib.Config.load(str(tmp_path / "student" / run_dir.CONFIG))
  assert saved.distill.teacher_features == copy and saved.distill.teachers == ()
  assert saved.distill.teacher_views == VIEWS
  assert saved.model.projection_dim == teacher_cache.FeatureReader(copy).dim


def test_a_killed_caching_pass_computes_only_its_missing_shards(cached, tmp_path, monkeypatch):
  teacher, features, source = cached
  copy = str(tmp_path / "features")
  shutil.copytree(features, copy)
  before = {shard: os.stat(teacher_cache.shard_path(copy, shard)).st_mtime_ns
            for shard in range(4)}
  reference = teacher_cache.FeatureReader(copy).rows(np.arange(512, 768))
  os.remove(teacher_cache.shard_path(copy, 1))
  with open(teacher_cache.shard_path(copy, 1) + ".tmp", "wb") as half_written:
    half_written.write(b"\0" * 100)
  with pytest.raises(ValueError, match="incomplete: 1 of 4 shards missing"):
    teacher_cache.FeatureReader(copy)
  monkeypatch.setattr(teacher_cache, "IMAGES_PER_SHARD", 256)
  moved = str(tmp_path / "teacher_moved")  # the same weights elsewhere: the same teacher
  shutil.copytree(teacher, moved)
  training.run(_features_config(copy, moved), source)
  after = {shard: os.stat(teacher_cache.shard_path(copy, shard)).st_mtime_ns
           for shard in range(4)}
  assert [after[s] == before[s] for s in range(4)] == [True, False, True, True]
  np.testing.assert_allclose(teacher_cache.FeatureReader(copy).rows(np.arange(512, 768)),
                             reference, atol=FLOAT16_STEP)


def test_a_cache_that_does_not_fit_stops_before_training(cached, tmp_path):
  teacher, features, source = cached
  with pytest.raises(ValueError, match=r"does not fit this run: image_size: cache 16, run 24$"):
    student.check(_config(tmp_path / "s", stage="student", data={"image_size": 24}, distill={"teacher_features": features}),
                  source)
  with pytest.raises(ValueError, match=r"does not fit this run: augmentation: cache 'standard', "
                                       r"run 'jitter'"):
    student.check(_config(tmp_path / "s", stage="student", data={"augmentation": "jitter"},
                          distill={"teacher_features": features}), source)
  with pytest.raises(ValueError, match=r"views: cache 2, run 3$"):
    student.check(_config(tmp_path / "s", stage="student", distill={
        "teacher_features": features, "teacher_views": 3}), source)
  fewer = sources.Source("mnist_lt", train=source.train.select(np.arange(900)),
                         test=source.test, class_names=source.class_names)
  with pytest.raises(ValueError, match=r"train_split_sha256: cache '[0-9a-f]+', run"):
    student.check(_config(tmp_path / "s", stage="student",
                          distill={"teacher_features": features}), fewer)
  # Caching where another teacher's features are: refused, naming the teachers.
  other = str(tmp_path / "other_teacher")
  training.run(_config(other, seed=1))
  copy = str(tmp_path / "features")
  shutil.copytree(features, copy)
  with pytest.raises(ValueError, match=r"holds features made otherwise: teachers: cache \[teacher "):
    training.run(_features_config(copy, other), source)


def test_the_cache_flags_are_checked_before_any_work(tmp_path):
  with pytest.raises(ValueError, match="--teacher_features replaces --teachers"):
    _config(tmp_path, stage="student", distill={
        "teachers": ("a",), "teacher_features": "b"}).validate()
  with pytest.raises(ValueError, match="needs --teacher_views=M"):
    _config(tmp_path, stage="teacher_features", distill={"teachers": ("a",)}).validate()
  with pytest.raises(ValueError, match="--teacher_features=b applies to --stage=student"):
    _config(tmp_path, stage="teacher", distill={"teacher_features": "b"}).validate()
  with pytest.raises(ValueError, match="no cache.json there"):
    teacher_cache.FeatureReader(str(tmp_path))


def test_a_pipeline_with_teacher_views_trains_its_student_from_the_cache(tmp_path):
  config = _config(tmp_path, stage="pipeline",
                   distill={"teacher_specs": ("vanilla:1",), "teacher_views": VIEWS})
  results = training.run(config)
  assert set(results) == {"vanilla_1", "student"}
  features = run_dir.teacher_features_dir(str(tmp_path))
  reader = teacher_cache.FeatureReader(features)
  assert reader.made_from["teachers"][0]["teacher"] == run_dir.teacher_dir(str(tmp_path),
                                                                            "vanilla_1")
  saved = config_lib.Config.load(os.path.join(run_dir.student_dir(str(tmp_path)),
                                              run_dir.CONFIG))
  assert saved.distill.teacher_features == features and saved.distill.teachers == ()


def test_caching_over_two_replicas_gives_the_single_device_rows(cached, tmp_path):
  teacher, features, source = cached
  mirrored = str(tmp_path / "mirrored")
  result = helpers.run_module(
      "cbd_tf.train", "--stage=teacher_features", f"--teachers={teacher}",
      f"--teacher_views={VIEWS}", "--dataset=mnist_lt", "--image_size=16", "--batch_size=16",
      "--crop_min_area=0.6", "--horizontal_flip=false", "--eval_crop_fraction=1.0",
      "--backbone=resnet8", "--strategy=mirrored", "--cpu_devices=2", f"--workdir={mirrored}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "teacher features: 988 of 988 images x 2 views (100%)" in result.stderr
  keys = np.arange(0, 988 * VIEWS, 7)
  np.testing.assert_allclose(teacher_cache.FeatureReader(mirrored).rows(keys),
                             teacher_cache.FeatureReader(features).rows(keys),
                             atol=FLOAT16_STEP)
