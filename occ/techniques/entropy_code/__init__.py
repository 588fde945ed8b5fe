"""``type: entropy_code``: code every tensor of the artifact near its entropy, losslessly.

- ``config``: ``EntropyCodeConfig`` (torch-free); ``run``: the stage (``entropy_code_``).
The coders themselves live in ``occ.coding`` and ``occ.artifact.codecs``.
"""

from occ.techniques.entropy_code.config import EntropyCodeConfig
from occ.techniques.spec import Edge, TechniqueSpec

LOSSLESS_LAST = (
    "entropy coding is lossless and codes the final integers; anything after it would "
    "change weights it has already coded"
)

SPEC = TechniqueSpec(
    type="entropy_code", config=EntropyCodeConfig,
    run="occ.techniques.entropy_code.run:entropy_code_",
    summary="Entropy-code every tensor: categorical ANS, sparse positions, lossless floats.",
    label="EC", aliases={"EC": "coding", "H": "coding", "entropy_code": "coding"},
    categories={"coding": "lossless coding (entropy coding)"},
    edges=(
        Edge("architecture", "coding", LOSSLESS_LAST, "DESIGN.md: lossless last"),
        Edge("channel", "coding", LOSSLESS_LAST, "DESIGN.md: lossless last"),
        Edge("weight", "coding", LOSSLESS_LAST, "Deep Compression; SuRP: code last"),
        Edge("bits", "coding", LOSSLESS_LAST, "Deep Compression: quantize, then Huffman"),
        Edge("dynamic", "coding", LOSSLESS_LAST, "DESIGN.md: lossless last"),
    ),
    singleton=True,
)
