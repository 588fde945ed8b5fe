"""``type: lowrank``: factorise Conv2d / Linear layers into low-rank products.

- ``config``: ``LowRankConfig`` (torch-free); ``run``: the stage (``lowrank_``);
- ``factor``: SVD of Linear and Conv2d kernels, Tucker-2 (HOSVD) of Conv2d kernels,
  the ``Factorised`` container and the rank choice (rank, share or energy);
- ``edit``: the ``lowrank`` edit op that rebuilds the factor shapes for ``occ.load``.
"""

from occ.techniques.lowrank.config import LowRankConfig
from occ.techniques.spec import Edge, TechniqueSpec

OOC = "Order of Compression (Shen et al., arXiv 2403.17447)"
LOSSLESS_LAST = ("lossless coding must see the final tensors; factorising after it would "
                 "throw the coded streams away")

SPEC = TechniqueSpec(
    type="lowrank", config=LowRankConfig, run="occ.techniques.lowrank.run:lowrank_",
    summary=("Factorise Conv2d / Linear layers into low-rank products (SVD, Tucker-2), "
             "by rank or kept energy, optionally fine-tuned."),
    label="LR",
    aliases={"LR": "factor", "lowrank": "factor", "svd": "factor", "tucker": "factor"},
    categories={"factor": "static factorisation (low-rank)"},
    edges=(
        Edge("architecture", "factor",
             "distillation replaces the architecture; layers factorised first would be "
             "factorised in a model that is then thrown away",
             f"{OOC}: D first (coarse to fine); Kim et al. 2016 factorise a trained model"),
        Edge("factor", "weight",
             "factorising replaces a kernel with new dense factors, so a sparsity mask set "
             "before it is lost; pruning the factors afterwards keeps both",
             f"{OOC}: coarse to fine (structure before single weights)"),
        Edge("factor", "bits",
             "quantization ranges and QAT are fit to the layers that run; factorising after "
             "rounding replaces the quantized kernels with new float factors",
             "Kim et al. 2016 / Jaderberg et al. 2014: decompose the float model; "
             f"{OOC}: static structure before Q"),
        Edge("factor", "dynamic",
             "exit heads and thresholds are calibrated on the backbone's features; "
             "factorising the backbone afterwards shifts them",
             f"{OOC}: static before dynamic"),
        Edge("factor", "coding", LOSSLESS_LAST, "DESIGN.md: lossless last"),
    ),
    edit_modules=("occ.techniques.lowrank.edit",),
)
