"""``type: distill``: a smaller student learns the model being compressed (KD).

- ``config``: ``DistillConfig``, ``StudentSpec`` and the KD defaults (torch-free);
- ``run``: the stage (``distill_``);
- ``loss``: the KD loss (``kd_loss``, ``distill_loss_fn``: a ``fit`` loss hook) and
  ``inherit_channels_`` (a student started from the teacher's strongest channels).
"""

from occ.techniques.distill.config import DistillConfig
from occ.techniques.spec import TechniqueSpec

SPEC = TechniqueSpec(
    type="distill", config=DistillConfig, run="occ.techniques.distill.run:distill_",
    summary="Train a smaller student from the current model (KD), then swap it in.",
    label="KD", aliases={"KD": "architecture", "D": "architecture", "distill": "architecture"},
    categories={"architecture": "static architecture (knowledge distillation)"},
    singleton=True, preflight="occ.techniques.distill.run:check_student",
)
