"""``type: prune``: remove weights (unstructured) or whole channels (structured).

Methods (``method:``):

- ``magnitude``: zero the smallest |w| of every Conv2d / Linear layer (``scope: global``
  ranks all layers together, ``layer`` prunes each to ``sparsity``), along a ``schedule``
  while fine-tuning with the masks held.
- ``surp``: successive refinement pruning (Isik et al. 2022), ``occ.techniques.prune.surp``.
- ``channel``: Torch-Pruning (DepGraph) removes whole channels, keeping residual joins,
  concatenations and depthwise convs consistent; importance ``l1 | l2 | bn_scale |
  taylor``; target ``channel_ratio`` (share of each layer's channels) or
  ``flops_reduction`` (share of the MACs).
- ``id``: Model Preserving Compression (Chee et al. 2022): interpolative decomposition
  of each layer's activations keeps the channels that reconstruct the rest and folds the
  interpolation matrix into the next layer; no fine-tuning needed. Sizes: ``keep`` (share
  of every layer's channels) or ``flops_reduction`` (chosen per layer, greedily).

Structured methods record the new shapes as a ``reshape`` edit, so the artifact rebuilds
the slim model. Any method fine-tunes afterwards for ``epochs`` (``distill: true``: the
uncompressed model teaches).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from occ.techniques.prune.schedule import Schedule
from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    from occ.engine.context import RunContext


from occ.techniques.prune.config import PruneConfig


def prune_(ctx: RunContext, config: PruneConfig) -> StageResult:
    """Prune weights (magnitude, SuRP) or channels (Torch-Pruning, interpolative decomposition)."""
    if config.method == "magnitude":
        from occ.techniques.prune.magnitude import magnitude_prune_ as run
    elif config.method == "channel":
        from occ.techniques.prune.channel import channel_prune_ as run
    elif config.method == "id":
        from occ.techniques.prune.preserve import id_prune_ as run
    else:
        from occ.techniques.prune.surp import surp_prune_ as run
    return run(ctx, config)


__all__ = ["PruneConfig", "Schedule", "prune_"]
