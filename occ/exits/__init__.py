"""Early exit: a backbone cut into segments with a head after each cut.

- ``split``: cutting a model at named modules (``torch.fx``), valid exit points;
- ``net``: ``EarlyExitNet`` (the early-exit forward, exit statistics, ``exit_metrics``)
  and the ``early_exit`` edit op that rebuilds it from an artifact;
- ``build``: choosing points (``auto_points``) and attaching heads (``attach``);
- ``training``: the ``fit`` loss hook and heads-only / joint set-up;
- ``calibrate``: thresholds that minimise expected BitOps within an accuracy budget
  (classification), or agreement epsilons within an MAE budget (regression).
- ``quant``: heads quantized like a quantized backbone (``quantize_heads``): the spec of
  its last quantized layer, QAT, frozen before calibration; ``fold_bn`` / ``quantize`` edits.

Used by ``occ.stages.early_exit``; importing this package registers the edit op.
"""

from occ.exits.build import attach, auto_points
from occ.exits.net import EarlyExitNet, exit_score, leaves, make_head
from occ.exits.split import exit_candidates

__all__ = ["EarlyExitNet", "attach", "auto_points", "exit_candidates", "exit_score", "leaves",
           "make_head"]
