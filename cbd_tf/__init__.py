"""cbd_tf: Class-Balanced Distillation (Iscen et al., BMVC 2021) for long-tailed images."""

from cbd_tf.distiller import CBDDistiller
from cbd_tf.losses import cbd_loss, feature_distillation_loss
from cbd_tf.models.classifier import Classifier

__all__ = ["CBDDistiller", "Classifier", "cbd_loss", "feature_distillation_loss"]
