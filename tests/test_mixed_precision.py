import keras
import numpy as np
import pytest

from cbd_tf.distiller import CBDDistiller
from tests import helpers


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_head_and_losses_stay_float32(policy):
  keras.mixed_precision.set_global_policy(policy)
  try:
    teacher = helpers.tiny_classifier()
    student = helpers.tiny_classifier(projection_dim=64)
    distiller = CBDDistiller(student, [teacher])
    distiller.compile(keras.optimizers.SGD(0.05, momentum=0.9), weight_decay=5e-4)
    images, labels = helpers.tiny_batch()
    logits, features = student.call_with_features(images)
    assert logits.dtype == "float32" and features.dtype == policy.split("_")[1]
    assert student.head.kernel.dtype == "float32"
    history = distiller.fit(images, labels, batch_size=8, epochs=2, verbose=0).history
    assert all(np.isfinite(history[name]).all() for name in ("loss", "loss_ce", "loss_distill"))
    if policy == "mixed_float16":
      assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
  finally:
    keras.mixed_precision.set_global_policy("float32")
