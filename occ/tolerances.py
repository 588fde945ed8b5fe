"""Default quality tolerances, in one place (torch-free: the CLI and the report use them).

Classification: points of accuracy. Regression: targets have task-specific units, so the
defaults are a share of the reference model's MAE, and "accuracy" is the share of
predictions within :data:`REGRESSION_WITHIN` of the target.
"""

from __future__ import annotations

ACCURACY_POINTS = 0.5
"""Default budget in accuracy points (``occ ablate --tolerance``, early-exit calibration)."""

MAE_SHARE = 0.05
"""Default regression budget: this share of the reference model's MAE."""

REGRESSION_WITHIN = 0.1
"""Regression ``accuracy`` / ``agreement``: share of outputs within this of the target (or
the reference model's output); 0.1 = 4.5 degrees on ``mnist5k-rotation``."""

TIE_BITOPS = 0.01
"""``occ ablate``'s pairwise verdicts: two orders within the quality tolerance whose BitOps
differ by less than this share are a tie (a 0.3 % gap drew a verdict)."""
