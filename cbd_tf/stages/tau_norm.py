"""--stage=tau_norm: --backbone_from's head with each class weight divided by its norm^tau,
tau given or swept on the validation split (decoupled.build_tau_norm). Not fitted."""

from __future__ import annotations

from cbd_tf import config as config_lib
from cbd_tf import decoupled
from cbd_tf.data import sources
from cbd_tf.stages import Built
from cbd_tf.stages import crt


def check(config: config_lib.Config, source: sources.Source) -> None:
  crt.check(config, source)
  decoupled.check_tau_split(config, source)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  classifier, config, selection = decoupled.build_tau_norm(config, source)
  return Built(classifier, config, selection=selection)
