"""SuRP: the vectorised successive-refinement coder, its stream, and the prune method."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from occ import api
from occ.artifact import accounting, codecs
from occ.artifact.codecs import Encoded
from occ.artifact.container import decode_artifact, encode_artifact, read_artifact
from occ.coding import surp as surp_code
from occ.errors import ArtifactError
from occ.techniques.prune.surp import allocate, surp_pass_

F32 = np.dtype("<f4")


def weights(n: int, seed: int = 0, keep: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.laplace(size=n) * 0.05).astype("<f4")
    if keep is not None:  # already pruned to its ``keep`` largest weights
        w[np.argsort(np.abs(w))[:-keep]] = 0
    return w


def test_powi_is_repeated_multiplication() -> None:
    q = (1000 - 1) / 1000
    value = 1.0
    for count in range(1, 300):
        value *= q
        assert surp_code._powi(q, count) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("n,keep", [(50_000, 500), (50_000, 5000), (2000, 1000), (500, 500),
                                    (3, 1)])
def test_round_trip_keeps_exact_count_signs_and_magnitudes(n: int, keep: int) -> None:
    w = weights(n)
    stream = surp_code.encode_tensor(w, keep, alpha=10.0)
    out = surp_code.decode(stream, {}, F32, n)
    again = surp_code.decode(stream, {}, F32, n)
    assert np.array_equal(out.view("<u4"), again.view("<u4"))  # replay is deterministic
    nz = np.flatnonzero(out)
    assert len(nz) == keep
    assert np.array_equal(np.sign(out[nz]), np.sign(w[nz]))
    rel = np.abs(out[nz] - w[nz]) / np.abs(w[nz])
    assert rel.mean() < 0.12
    if keep < n // 2:  # the weights sent are the large ones
        assert np.abs(w[nz]).min() >= np.quantile(np.abs(w), 1 - 2 * keep / n)


def test_pruned_tensor_keeps_its_support_and_is_not_ternary() -> None:
    w = weights(100_000, keep=3000)
    out = surp_code.decode(surp_code.encode_tensor(w, 3000, 10.0), {}, F32, w.size)
    assert set(np.flatnonzero(out)) == set(np.flatnonzero(w))
    assert len(np.unique(np.abs(out[out != 0]))) > 20  # magnitudes survive, not just ±τ


def test_stream_is_compact() -> None:
    w = weights(200_000)
    stream = surp_code.encode_tensor(w, 4000, 10.0)
    bits_per_nonzero = 8 * len(stream) / 4000
    # positions alone cost n·H(k/n)/k = 7.6 bits; signs 1; magnitudes the rest
    assert 8.6 < bits_per_nonzero < 14


def test_malformed_streams_are_refused() -> None:
    w = weights(5000)
    stream = surp_code.encode_tensor(w, 300, 10.0)
    for bad in (stream[:-1], stream[:40], stream + b"\x01\0\0\0", b"\x31" + stream[1:]):
        with pytest.raises(ValueError):
            surp_code.decode(bad, {}, F32, w.size)
    with pytest.raises(ValueError, match="float"):
        surp_code.decode(stream, {}, np.dtype("i1"), w.size)
    nan = bytearray(stream)
    nan[2:10] = np.array([np.nan]).tobytes()  # the norm
    with pytest.raises(ValueError, match="finite"):
        surp_code.decode(bytes(nan), {}, F32, w.size)


def test_random_damage_never_crashes() -> None:
    w = weights(2000)
    stream = surp_code.encode_tensor(w, 200, 10.0)
    rng = np.random.default_rng(1)
    for _ in range(300):
        bad = bytearray(stream)
        bad[rng.integers(len(bad))] = rng.integers(256)
        try:
            out = surp_code.decode(bytes(bad), {}, F32, w.size)
        except ValueError:
            continue
        assert out.size == w.size


def test_surp_codec_cannot_encode_from_a_tensor_alone() -> None:
    with pytest.raises(ArtifactError, match="prune"):
        encode_artifact({}, {"w": torch.randn(10)}, "surp")


def test_prepared_stream_is_stored_and_decodes_bit_exactly() -> None:
    w = weights(40_000)
    stream = surp_code.encode_tensor(w, 800, 10.0)
    rebuilt = surp_code.decode(stream, {}, F32, w.size)
    prepared: dict = {}
    codecs.prepare({"prepared": prepared}, rebuilt, Encoded("surp", stream))
    assert len(prepared) == 1
    tensors = {"layer.weight": torch.from_numpy(rebuilt.copy()).reshape(200, 200),
               "layer.bias": torch.randn(200)}
    for entropy in (False, True):
        data = encode_artifact({}, tensors, codecs.Policy(prepared, entropy=entropy))
        art = decode_artifact(data)
        assert {s["name"]: s["codec"] for s in art.streams}["layer.weight"] == "surp"
        assert torch.equal(art.tensors["layer.weight"], tensors["layer.weight"])
    parts = {r["name"]: r["parts"] for r in accounting.size_breakdown(data)["streams"]}
    assert set(parts["layer.weight"]) >= {"positions", "signs", "tables"}
    tensors["layer.weight"][0, 0] += 1.0  # the tensor changed: its stream no longer applies
    data = encode_artifact({}, tensors, codecs.Policy(prepared, entropy=True))
    assert {s["name"]: s["codec"] for s in decode_artifact(data).streams}["layer.weight"] == "fbp"


def test_allocation_is_global_magnitude_with_exact_count() -> None:
    torch.manual_seed(0)
    layers = {"a": nn.Linear(100, 50), "b": nn.Linear(50, 10)}
    counts = allocate(layers, 0.9)
    assert sum(counts.values()) == 5500 - round(0.9 * 5500)
    flat = torch.cat([m.weight.detach().abs().reshape(-1) for m in layers.values()])
    threshold = flat.sort(descending=True).values[sum(counts.values()) - 1]
    assert counts["a"] == int((layers["a"].weight.abs() >= threshold).sum())


def test_surp_pass_sets_weights_to_the_decoded_stream() -> None:
    torch.manual_seed(0)
    layers = {"a": nn.Linear(200, 100), "b": nn.Linear(100, 10)}
    streams = surp_pass_(layers, 0.8, alpha=10.0)
    for name, (stream, stored) in streams.items():
        w = layers[name].weight.detach().reshape(-1).numpy()
        assert np.array_equal(w, stored)
        assert np.array_equal(surp_code.decode(stream, {}, F32, w.size), w)
    kept = sum(int((m.weight != 0).sum()) for m in layers.values())
    assert kept == 21000 - round(0.8 * 21000)


@pytest.mark.slow
def test_prune_surp_end_to_end(recipe_factory) -> None:
    recipe = recipe_factory([
        {"type": "prune", "method": "surp", "sparsity": 0.9, "epochs": 1, "distill": True},
        {"type": "entropy_code"},
    ])
    report = api.compress(recipe)
    assert report.artifact_bytes == os.path.getsize(report.artifact)
    art = read_artifact(report.artifact)
    chosen = {s["name"]: s["codec"] for s in art.streams}
    assert [c for n, c in chosen.items() if n.endswith("weight")] == ["surp"] * 4
    prune = report.stages[0]
    assert prune.details["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert prune.details["surp_bytes"] <= report.artifact_bytes
