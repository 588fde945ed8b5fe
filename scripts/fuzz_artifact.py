"""Fuzz the artifact reader with 10,000 corrupted artifacts; write the counts as JSON.

Usage: python scripts/fuzz_artifact.py [--count 10000] [--seed 0]

Builds real artifacts (a LeNet-5 stored raw, the same model through every codec the
installed stages register, and a pruned 4-bit one whose integers are ``ctx`` streams under
the compact binary header), corrupts them (truncation in every region, bit flips with and
without a re-sealed checksum, edited header lengths/offsets/shapes/counts/codecs/edits,
re-sealed headers that lie (``occ.engine.fuzz.LIES``: valid checksum, false shapes, dtypes,
lengths, names, metrics, nesting, kwargs; these also go through what ``occ inspect``
runs), foreign files) and reads each one with a time and memory bound. Every file must be
rejected with ArtifactError or, if its checksum was re-sealed, load as a valid model.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import time
from pathlib import Path

import torch

from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.artifact.container import encode_artifact
from occ.engine import fuzz
from occ.models import build_model

RESULTS = Path(__file__).parent / "results" / "fuzz_artifact.json"


def quantized_artifact() -> bytes:
    """A pruned LeNet-5 with two layers frozen at 4 and 8 bits (scales rounded to 8 bits),
    written as ``entropy_code`` writes it: compact header, ``ctx`` / ``cat`` / ``fbp``
    streams; its conv taps come in signed strokes, so ``ctx`` codes their positions in
    neighbour passes and their signs apart, and the 8-bit layer takes binned tables."""
    from occ.models.edits import edit_record
    from occ.techniques.quantize.calibrate import calibrate_acts_
    from occ.techniques.quantize.layers import QuantSpec, freeze_, swap_layers_

    torch.manual_seed(0)
    kwargs = {"width": 0.5}
    model = build_model("lenet5", kwargs).eval()
    with torch.no_grad():  # neurons and inputs of unequal weight, as training leaves them
        for p in model.parameters():
            if p.ndim >= 2:
                flat = p.view(p.shape[0], -1)
                flat.mul_(torch.rand(flat.shape[0], 1) ** 2 * torch.rand(1, flat.shape[1]) ** 2)
            if p.ndim == 4:  # signed blobs: survivors cluster, neighbours share a sign
                yy, xx = torch.meshgrid(torch.arange(p.shape[2]), torch.arange(p.shape[3]),
                                        indexing="ij")
                cy, cx = (torch.rand(2, *p.shape[:2], 1, 1) * p.shape[2]).unbind(0)
                bump = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 2)
                p.copy_(p.abs() * bump * torch.where(xx < cx, 1.0, -1.0))
            p.mul_((p.abs() > p.abs().flatten().quantile(0.9)).to(p.dtype))
    # features.3 at 4 bits; classifier.1 at 8 (wide alphabets: binned value tables)
    layers = swap_layers_(model, {"features.3": QuantSpec(4, 4), "classifier.1": QuantSpec(8, 8)})
    calibrate_acts_(model, layers, [torch.randn(8, 1, 28, 28)], method="minmax",
                    percentile=99.9, device=torch.device("cpu"))
    freeze_(model, scale_bits=8)
    edit = edit_record("quantize", {"layers": {n: m.spec.to_dict() for n, m in layers.items()}})
    header = artifact_header.model_header(arch={"arch": "lenet5", "kwargs": kwargs}, edits=[edit],
                                   input_shape=(1, 28, 28), num_classes=10)
    return encode_artifact(header, model_io.state_tensors(model),
                           model_io.codec_policy({"entropy": True}))


def sample_artifacts() -> dict[str, bytes]:
    """A sparse LeNet-5 stored raw and entropy-coded, and a pruned, quantized one."""
    torch.manual_seed(0)
    model = build_model("lenet5", {"width": 0.25})
    with torch.no_grad():  # sparse weights, like a pruned model
        for p in model.parameters():
            p.mul_((torch.rand_like(p) > 0.8).to(p.dtype))
    header = artifact_header.model_header(arch={"arch": "lenet5", "kwargs": {"width": 0.25}},
                                   edits=[], input_shape=(1, 28, 28), num_classes=10)
    out = {"raw": encode_artifact(header, model_io.state_tensors(model), "raw")}
    policy = model_io.codec_policy({"entropy": True})  # what entropy_code writes
    out["entropy"] = encode_artifact(header, model_io.state_tensors(model), policy)
    out["quantized"] = quantized_artifact()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    artifacts = sample_artifacts()
    per = args.count // len(artifacts)
    counts: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    failures = []
    slowest = 0.0
    t0 = time.perf_counter()
    for name, data in artifacts.items():
        for m in fuzz.mutations(data, per, seed=args.seed):
            o = fuzz.check(m, inspect=m.kind.startswith("lie:"))
            counts[o.result] += 1
            kinds[m.kind.split(":")[0]] += 1
            slowest = max(slowest, o.seconds)
            if o.result not in ("rejected", "loaded"):
                failures.append({"artifact": name, "kind": m.kind, "result": o.result,
                                 "detail": o.detail})
    total = sum(counts.values())
    doc = {"files": total, "outcomes": dict(counts), "mutation_kinds": dict(kinds),
           "failures": failures[:50], "failure_count": len(failures),
           "slowest_seconds": slowest, "seconds": time.perf_counter() - t0,
           "artifacts": {k: len(v) for k, v in artifacts.items()},
           "python": platform.python_version(), "torch": torch.__version__}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{total} corrupted artifacts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"failures: {len(failures)}; slowest read {slowest * 1000:.1f} ms -> {RESULTS}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
