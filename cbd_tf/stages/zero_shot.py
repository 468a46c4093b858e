"""--stage=zero_shot: a CLIP or SigLIP preset's zero-shot classifier, classifying as CLIP
does: exp(logit_scale) * cos(the projected image embedding, the text embedding of
--class_prompt for each class name). Built, saved, exported and evaluated; not fitted.

The preset's logit scale becomes the run's --cosine_scale (written to its config.json, so
the saved run rebuilds the same logits); the preset's image side is kept in the run like a
teacher's, so the run evaluates and exports offline.
"""

from __future__ import annotations

from cbd_tf import config as config_lib
from cbd_tf import distribute, pretrained
from cbd_tf.data import sources
from cbd_tf.models import text_classifier
from cbd_tf.stages import Built


def check(config: config_lib.Config, source: sources.Source) -> None:
  pretrained.check_text_head(config, source)


def build(config: config_lib.Config, source: sources.Source) -> Built:
  text = pretrained.text_head(config, source)
  config = config.replace(model={"cosine_scale": text.scale, "head": "cosine",
                                 "head_init": "text"})
  classifier = pretrained.build_starting_classifier(config, source.num_classes,
                                                    distribute.is_chief(), source, text)
  # Whatever the directory holds: build_starting_classifier leaves the head of a run with
  # checkpoints (a resumed teacher's) as it is.
  text_classifier.set_text_head(classifier, text.weights)
  return Built(classifier, config)
