"""``type: entropy_code``: code every tensor of the artifact near its entropy, losslessly.

Always last in the built-in order. It installs ``occ.artifact.codecs.Policy`` as the run's
codec policy, so every artifact written from then on (the size measured after each stage
and ``model.occ`` itself) gives each tensor the smallest of:

- ``cat``: integers (quantized weights, zero points) under a per-tensor categorical
  model, zeros either inline or as positions (bitmask or gaps, whichever is smaller);
- ``fbp``: any tensor by its bit patterns, byte plane by byte plane (floats: biases,
  scales, BN, unquantized weights; nothing is rounded);
- ``surp``: the index stream of a ``prune`` stage with ``method: surp``, while the
  weights are still the ones it coded;
- ``raw``.

Nothing about the model changes; ``occ.load`` decodes bit for bit (the runner checks it).
Work is done in ``occ.coding`` (imported in ``run``: this module stays torch-free).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    from occ.engine.context import RunContext



from occ.techniques.entropy_code.config import EntropyCodeConfig


def entropy_code_(ctx: RunContext, config: EntropyCodeConfig) -> StageResult:
    """Entropy-code every tensor: categorical ANS, sparse positions, lossless floats."""
    from occ.artifact import accounting, codecs, model_io
    codecs.install(ctx.encoding, entropy=True)
    data = model_io.artifact_bytes(ctx.model, {}, ctx.encoding)  # tensors only, no header
    size = accounting.size_breakdown(data)
    streams = {r["name"]: {"codec": r["codec"], "bytes": r["bytes"],
                           "entropy_bytes": r["entropy_bytes"], "zstd_bytes": r["zstd_bytes"]}
               for r in size["streams"]}
    coded = size["total_bytes"] - size["header_bytes"]
    details = {"stream_bytes": coded, "kinds": {k: v for k, v in size["kinds"].items()
                                                if k != "header"},
               "raw_bytes": size["raw_bytes"], "entropy_bytes": size["entropy_bytes"],
               "zstd_bytes": size["zstd_bytes"],
               "bits_per_weight": 8 * coded / size["weights"] if size["weights"] else 0.0,
               "bits_per_nonzero": (8 * coded / size["nonzero_weights"]
                                    if size["nonzero_weights"] else 0.0),
               "streams": streams}
    used = sorted({s["codec"] for s in streams.values()})
    zstd = f"{size['zstd_bytes']:,}" if size["zstd_bytes"] is not None else "not measured"
    note = (f"{len(streams)} tensors coded in {coded:,} bytes ({', '.join(used)}); "
            f"raw {size['raw_bytes']:,}, zstd-19 {zstd}")
    return StageResult(details=details, notes=[note])
