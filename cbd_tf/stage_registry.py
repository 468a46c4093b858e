"""Every stage `--stage` names, declared once: its defaults, the settings only it reads, what
it needs, the head it evaluates with, its run-directory files and the module that builds it.

Standard library only, so config.py resolves a stage's defaults and config_checks.py its
settings without TensorFlow. The module an entry names holds the TensorFlow side
(cbd_tf/stages/): `build(config, source) -> stages.Built`, and optionally `check(config,
source)` (ValueError before any work) and `callbacks(built, source, log_dir, save_dir)`; the
module of a stage that `runs_itself` (the pipeline, the feature cache) holds `run(config,
source, strategy)` instead.

Adding a baseline stage: its module under cbd_tf/stages/, its entry here, its test and its
docs page.
"""

from __future__ import annotations

import dataclasses

from cbd_tf import run_dir

# What a stage needs before it starts (Stage.needs).
NEEDS_TEACHERS = "teachers"  # --teachers: finished runs or keras_hub presets
NEEDS_BACKBONE_RUN = "backbone_run"  # --backbone_from: a finished teacher or student run
NEEDS_TEACHER_SPECS = "teacher_specs"  # --teacher_specs: the teachers a pipeline trains

# Where a stage's head comes from a CLIP / SigLIP preset's text (Stage.text_head).
TEXT_HEAD_ALWAYS = "always"  # the text embeddings are the classifier (zero_shot)
TEXT_HEAD_ON_INIT = "head_init"  # with --head_init=text, the head starts from them


# Stage-specific settings a data set's flagfile sets once for all its stages (the paper
# flagfiles' pipeline teachers, a data set's cRT epochs): the other stages ignore them rather
# than refuse them. Every other stage-specific setting given to a stage that does not read it
# stops the run (config_checks.py).
SHARED_RECIPE_SETTINGS = ("teacher_specs", "teacher_sampling", "decoupled_epochs",
                          "decoupled_warmup_epochs", "decoupled_batchnorm", "ncm_features",
                          "ncm_distance")


@dataclasses.dataclass(frozen=True)
class Stage:
  """One entry of STAGES."""
  name: str
  summary: str  # one line, for --help
  module: str  # the cbd_tf.stages module that builds (or, for the pipeline, runs) it
  default_sampling: str = "class_balanced"  # when --sampling is not given
  # None: --epochs. A number: the stage's recipe, overridden by --decoupled_epochs (whose
  # warm-up is --decoupled_warmup_epochs).
  default_epochs: int | None = None
  trains: bool = True  # False: built, then evaluated (no loss, optimiser or checkpoint)
  needs: str = ""  # NEEDS_*
  # Flags only this stage (and any other stage listing them) reads: given to any other stage
  # with a value other than the default, config_checks refuses them (but
  # SHARED_RECIPE_SETTINGS).
  settings: tuple[str, ...] = ()
  evaluation_head: str = ""  # "": the trained --head; "ncm": the class-mean head it builds
  run_files: tuple[str, ...] = ()  # files beyond every run's (run_dir.py names them)
  backbone_source: bool = False  # a decoupled stage may keep its backbone (--backbone_from)
  # Not one trained model: the module's run(config, source, strategy) does it all (the
  # pipeline's directory of runs, the feature cache).
  runs_itself: bool = False
  recipe: str = "CBD"  # whose recipe tools/compare.py gives it (compare.RECIPES)
  # TEXT_HEAD_*: its head from the --backbone preset's text (config_checks: a keras_hub
  # preset and the cosine head); "": never.
  text_head: str = ""

  @property
  def own_epochs(self) -> bool:
    """True for stages with their own epoch recipe (--decoupled_epochs, not --epochs)."""
    return self.default_epochs is not None


_BEST_EPOCH = (run_dir.SELECTION, run_dir.BEST_EPOCH_WEIGHTS, run_dir.BEST_EPOCH_RECORD)
_DECOUPLED = dict(needs=NEEDS_BACKBONE_RUN, recipe="classifier-balancing")
_FITTED_HEAD = ("backbone_from", "decoupled_batchnorm", "decoupled_epochs",
                "decoupled_warmup_epochs")

STAGES: dict[str, Stage] = {stage.name: stage for stage in (
    Stage("teacher", "a classifier, instance sampling (CBD stage one; the loss baselines)",
          "cbd_tf.stages.teacher", default_sampling="instance",
          settings=("loss", "init_from"), backbone_source=True, text_head=TEXT_HEAD_ON_INIT),
    Stage("student", "a CBD student distilled from --teachers (or their cached "
          "--teacher_features), class-balanced sampling",
          "cbd_tf.stages.student", needs=NEEDS_TEACHERS,
          settings=("teachers", "init_from", "teacher_views", "teacher_features"),
          run_files=(run_dir.PRESET_TEACHERS,), backbone_source=True),
    Stage("teacher_features", "the --teachers' features of --teacher_views views of every "
          "training image, cached for students", "cbd_tf.stages.teacher_features",
          needs=NEEDS_TEACHERS, settings=("teachers", "teacher_views"),
          run_files=(run_dir.PRESET_TEACHERS, run_dir.TEACHER_FEATURES_RECORD),
          runs_itself=True),
    Stage("pipeline", "the --teacher_specs teachers, then the student, in one directory",
          "cbd_tf.stages.pipeline", needs=NEEDS_TEACHER_SPECS,
          settings=("teachers", "init_from", "student_backbone", "teacher_specs",
                    "teacher_sampling", "teacher_views"),
          run_files=(run_dir.TEACHERS, run_dir.STUDENT, run_dir.COMPARISON,
                     run_dir.COMPARISON_TEXT, run_dir.TEACHER_FEATURES),
          runs_itself=True, text_head=TEXT_HEAD_ON_INIT),  # its teachers'
    Stage("crt", "classifier re-training on --backbone_from's frozen backbone (Kang et al.)",
          "cbd_tf.stages.crt", default_epochs=10, settings=_FITTED_HEAD,
          run_files=_BEST_EPOCH, **_DECOUPLED),
    Stage("lws", "learnable weight scaling of --backbone_from's head (Kang et al.)",
          "cbd_tf.stages.lws", default_epochs=5, settings=_FITTED_HEAD,
          run_files=_BEST_EPOCH, **_DECOUPLED),
    Stage("tau_norm", "--backbone_from's head, each class weight divided by its norm^tau",
          "cbd_tf.stages.tau_norm", trains=False, settings=("backbone_from", "tau"),
          run_files=(run_dir.SELECTION,), **_DECOUPLED),
    Stage("ncm", "nearest class mean on --backbone_from's embeddings",
          "cbd_tf.stages.ncm", trains=False,
          settings=("backbone_from", "ncm_features", "ncm_distance"), evaluation_head="ncm",
          **_DECOUPLED),
    Stage("zero_shot", "a CLIP / SigLIP preset's zero-shot classifier: the text embeddings "
          "of --class_prompt for each class, not trained", "cbd_tf.stages.zero_shot",
          trains=False, recipe="CLIP", text_head=TEXT_HEAD_ALWAYS),
)}


def get_stage(name: str) -> Stage:
  """The entry of stage `name`; ValueError listing the valid names."""
  if name not in STAGES:
    raise ValueError(f"unknown stage {name!r}; valid: {', '.join(STAGES)}")
  return STAGES[name]


def stages_reading(flag: str) -> tuple[str, ...]:
  """The stages that read the stage-specific setting --`flag` (empty: every stage reads it)."""
  return tuple(name for name, stage in STAGES.items() if flag in stage.settings)


def backbone_source_stages() -> tuple[str, ...]:
  return tuple(name for name, stage in STAGES.items() if stage.backbone_source)
