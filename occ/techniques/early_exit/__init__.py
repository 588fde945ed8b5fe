"""``type: early_exit``: a backbone cut into segments with a head after each cut.

- ``config``: ``EarlyExitConfig`` (torch-free); ``run``: the stage (``early_exit_``);
- ``split``: cutting a model at named modules (``torch.fx``), valid exit points;
- ``net``: ``EarlyExitNet`` (the early-exit forward, exit statistics, ``exit_metrics``)
  and the ``early_exit`` edit op that rebuilds it from an artifact;
- ``build``: choosing points (``auto_points``) and attaching heads (``attach``);
- ``training``: the ``fit`` loss hook and heads-only / joint set-up;
- ``calibrate``: thresholds that minimise expected BitOps within an accuracy budget
  (classification), or agreement epsilons within an MAE budget (regression);
- ``quant``: heads quantized like a quantized backbone (``quantize_heads``);
- ``checks``: the warnings for heads near chance and exits no val input takes.
"""

from occ.techniques.early_exit.config import EarlyExitConfig
from occ.techniques.spec import Edge, TechniqueSpec

OOC = "Order of Compression (Shen et al., arXiv 2403.17447)"

SPEC = TechniqueSpec(
    type="early_exit", config=EarlyExitConfig, run="occ.techniques.early_exit.run:early_exit_",
    summary="Attach exit heads, train them and set (or calibrate) the exit thresholds.",
    label="EE", aliases={"EE": "dynamic", "E": "dynamic", "early_exit": "dynamic"},
    categories={"dynamic": "dynamic architecture (early exit)"},
    edges=(
        Edge("architecture", "dynamic",
             "exit heads are attached to the final backbone; a student trained afterwards "
             "would not have them", f"{OOC}: D before E"),
        Edge("channel", "dynamic",
             "static before dynamic: exit thresholds are calibrated on the final static "
             "network", f"{OOC}: P before E"),
        Edge("weight", "dynamic",
             "static before dynamic: exit heads and thresholds are set on the final sparse "
             "backbone", f"{OOC}: P before E"),
        Edge("bits", "dynamic",
             "exit confidences are calibrated on the quantized backbone's features; "
             "quantizing afterwards moves them", f"{OOC}: Q before E"),
    ),
    singleton=True,
    edit_modules=("occ.techniques.early_exit.net",),
    preflight="occ.techniques.early_exit.run:check_exits",
)
