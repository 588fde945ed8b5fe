"""``type: prune``: remove weights (unstructured) or whole channels (structured).

- ``config``: ``PruneConfig`` (torch-free); ``schedule``: sparsity schedules (torch-free);
- ``run``: the stage (``prune_``), dispatching to one module per method:
- ``magnitude``: unstructured magnitude pruning with masked fine-tuning;
- ``channel``: structured pruning with Torch-Pruning (DepGraph) that removes channels;
- ``interp``: the interpolative decomposition (column-pivoted QR) and its error;
- ``preserve``: Model Preserving Compression (Chee et al. 2022): ID pruning that folds
  the interpolation matrix into the next layer, with automatic per-layer sizes;
- ``surp``: successive refinement pruning (SuRP);
- ``common``: what the methods share (layer lookup, fine-tuning, recording new shapes).
"""

from occ.techniques.prune.config import PruneConfig
from occ.techniques.spec import Edge, TechniqueSpec

OOC = "Order of Compression (Shen et al., arXiv 2403.17447)"

SPEC = TechniqueSpec(
    type="prune", config=PruneConfig, run="occ.techniques.prune.run:prune_",
    summary=("Prune weights (magnitude, SuRP) or channels (Torch-Pruning, interpolative "
             "decomposition)."),
    label="P",
    aliases={"P": "weight", "prune": "weight", "channel": "channel", "id": "channel",
             "magnitude": "weight", "surp": "weight"},
    categories={"channel": "static channel / neuron (structured pruning)",
                "weight": "static weight (unstructured pruning)"},
    edges=(
        Edge("architecture", "channel",
             "distillation replaces the architecture; channels pruned first would be pruned "
             "from a model that is then thrown away", f"{OOC}: D before P"),
        Edge("architecture", "weight",
             "distillation replaces the architecture; a sparsity mask set first would be "
             "discarded with the teacher", f"{OOC}: D before P"),
        Edge("channel", "weight",
             "coarse to fine: remove whole channels first, then sparsify what remains; a "
             "mask set first would be cut up by the channel removal", f"{OOC}: coarse to fine"),
    ),
)
