"""``method: surp``: successive refinement pruning (Isik et al. 2022, PAPERS.md §2).

SuRP prunes by coding: each Conv2d / Linear weight tensor is replaced by what the SuRP
decoder rebuilds from its index stream (``occ.coding.surp``), so weights never sent are
exactly zero and the stream *is* the tensor's compressed form, stored as codec ``surp``.

- **Allocation.** The authors run one SuRP over all layers' weights, each normalised by its
  tensor's L2 norm, so a layer's share of nonzeros follows a global ranking of
  |w| / ||w||. That starves large layers: ||w|| grows with sqrt(n), and on LeNet-5 the
  400K-weight fc1 kept 135 weights at 95 % sparsity (10 % accuracy). occ instead sets each
  layer's count of nonzeros by the global ranking of |w| (what global magnitude pruning
  keeps), then runs SuRP per tensor (normalised by its own norm, as in the paper), so
  every tensor's stream decodes on its own.
- **Iterative mode.** Along the ``schedule``'s sparsity levels (``geometric`` gives the
  paper's 0.2, 0.36, 0.488 ...): SuRP to the level, then ``epochs`` of masked fine-tuning
  (``distill: true``: the uncompressed model teaches). Fine-tuning moves the weights off
  the SuRP grid, so a last SuRP pass at the target sparsity (same support) follows, and
  its output is what the artifact stores. With ``epochs: 0`` there is one pass.
- **After it.** A later ``quantize`` stage re-quantizes the nonzeros and ``entropy_code``
  codes them with ``cat``; the SuRP streams are then unused. Without quantization the
  ``surp`` streams are offered to the codec policy, which keeps them when smaller than
  the alternatives (they always are, for a pruned float tensor: ``fbp`` stores the same
  positions plus the float bits).
- **Which is smaller.** SuRP + 3-bit QAT + ``cat`` is about half the size of the SuRP
  streams at the same accuracy (``scripts/bench_size.py``: LeNet-5 6.3 KB vs 14.0 KB,
  LeNet-300-100 5.1 KB vs 10.0 KB): the last SuRP pass must send every surviving weight,
  down to the smallest, so it spends many steps (and re-sends of the large weights) on
  precision QAT gets from 3 bits. Recipes that quantize should; ``surp`` streams are what
  a float-only recipe stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from occ import sparsity
from occ.artifact import codecs
from occ.artifact.codecs import Encoded
from occ.artifact.container import to_numpy
from occ.coding import surp as surp_code
from occ.errors import RecipeError
from occ.techniques.finetune import finetune_
from occ.techniques.prune import schedule as sched
from occ.techniques.spec import StageResult

if TYPE_CHECKING:
    from occ.engine.context import RunContext
    from occ.techniques.prune.config import PruneConfig


def allocate(layers: dict[str, nn.Module], level: float) -> dict[str, int]:
    """Nonzeros per layer: the global top ``1 - level`` share of |w| over all ``layers``."""
    scores = [m.weight.detach().float().abs().reshape(-1).cpu() for m in layers.values()]
    flat = torch.cat(scores) if scores else torch.zeros(0)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    n_keep = flat.numel() - int(round(level * flat.numel()))
    if n_keep > 0:
        keep[torch.argsort(flat, descending=True, stable=True)[:n_keep]] = True
    out, start = {}, 0
    for name, s in zip(layers, scores, strict=True):
        out[name] = int(keep[start:start + s.numel()].sum())
        start += s.numel()
    return out


@torch.no_grad()
def surp_pass_(layers: dict[str, nn.Module], level: float,
               alpha: float) -> dict[str, tuple[bytes, np.ndarray]]:
    """Replace every layer's weight by its SuRP reconstruction at ``level`` sparsity.

    Returns ``{layer: (surp stream, flat weights as stored)}`` for the layers whose stored
    weights the stream decodes to bit for bit (float32 ones; a bfloat16 layer is rounded
    after decoding, so its stream is not offered to the codec policy).
    """
    counts = allocate(layers, level)
    out = {}
    for name, module in layers.items():
        w = module.weight
        flat = w.detach().float().reshape(-1).cpu().numpy()
        if flat.size < 3:
            continue
        cols = flat.size // w.shape[0] if w.dim() >= 2 else None
        stream = surp_code.encode_tensor(flat, counts[name], alpha, cols)
        rebuilt = surp_code.decode(stream, {}, np.dtype("<f4"), flat.size)
        w.copy_(torch.from_numpy(rebuilt).reshape(w.shape).to(w.device, w.dtype))
        stored = to_numpy(w)[1]
        if stored.dtype == rebuilt.dtype and np.array_equal(stored.view("u4"),
                                                            rebuilt.view("u4")):
            out[name] = (stream, stored)
    return out


def surp_prune_(ctx: RunContext, config: PruneConfig) -> StageResult:
    """SuRP to ``config.sparsity`` (iteratively, with masked fine-tuning, if ``epochs``)."""
    layers = sparsity.prunable(ctx.model, config.exclude)  # RecipeError on an unknown name
    frozen = [n for n, m in layers.items() if getattr(m, "weight_int", None) is not None]
    if frozen:  # SuRP's reconstructed values are not on the layer's integer grid
        raise RecipeError(f"surp cannot prune quantized layers ({', '.join(frozen[:3])}"
                          f"{', ...' if len(frozen) > 3 else ''}): put prune before quantize "
                          "(order: auto does) or use method: magnitude", where="method")
    levels = sched.levels(config.schedule, config.sparsity) if config.epochs else []
    for i, level in enumerate(levels):
        surp_pass_(layers, level, config.alpha)
        masks = {n: m.weight.detach() != 0 for n, m in layers.items()}
        finetune_(ctx, config, description=f"surp fine-tune {i + 1}/{len(levels)}",
                  after_step=lambda model, masks=masks: sparsity.apply_masks_(model, masks))
    streams = surp_pass_(layers, config.sparsity, config.alpha)
    for stream, stored in streams.values():
        codecs.prepare(ctx.encoding, stored, Encoded("surp", stream))
    codecs.install(ctx.encoding, entropy=False)
    details = _details(layers, streams, config, levels)
    return StageResult(details=details, notes=[_note(details, config, levels)])


def _details(layers: dict[str, nn.Module], streams: dict[str, tuple[bytes, np.ndarray]],
             config: PruneConfig, levels: list[float]) -> dict[str, Any]:
    per_layer = {}
    for name, module in layers.items():
        nz = int(torch.count_nonzero(module.weight))
        size = len(streams[name][0]) if name in streams else None
        per_layer[name] = {"sparsity": 1.0 - nz / module.weight.numel(), "nonzero": nz,
                           "surp_bytes": size,
                           "bits_per_nonzero": 8 * size / nz if size and nz else None}
    total = sum(module.weight.numel() for module in layers.values())
    zeros = sum(module.weight.numel() - int(torch.count_nonzero(module.weight))
                for module in layers.values())
    return {"sparsity": zeros / total if total else 0.0, "target": config.sparsity,
            "alpha": config.alpha, "levels": levels + [config.sparsity],
            "surp_bytes": sum(len(s) for s, _ in streams.values()), "layers": per_layer,
            "excluded": list(config.exclude)}


def _note(d: dict[str, Any], config: PruneConfig, levels: list[float]) -> str:
    note = (f"SuRP (alpha {config.alpha:g}) to {100 * d['sparsity']:.1f}% zero weights; "
            f"index streams {d['surp_bytes']:,} bytes")
    if levels:
        note += f", {len(levels)} level(s) with {config.epochs} epoch(s) of masked fine-tuning each"
    return note
