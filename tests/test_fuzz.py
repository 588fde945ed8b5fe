"""Corrupted artifacts: a sample of the fuzz corpus plus hypothesis-generated damage."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from occ.artifact import header as artifact_header
from occ.artifact import model_io
from occ.artifact.container import decode_artifact, encode_artifact
from occ.artifact.layout import checksum
from occ.engine import fuzz
from occ.errors import ArtifactError
from occ.models import build_model


@pytest.fixture(scope="module")
def artifact_bytes() -> bytes:
    torch.manual_seed(0)
    model = build_model("lenet300", {"width": 0.1})
    header = artifact_header.model_header(arch={"arch": "lenet300", "kwargs": {"width": 0.1}},
                                   edits=[], input_shape=(1, 28, 28), num_classes=10)
    return encode_artifact(header, model_io.state_tensors(model))


@pytest.mark.slow
def test_fuzz_sample_is_rejected_or_valid(artifact_bytes: bytes) -> None:
    # No time limit here (a loaded machine is not a hang): scripts/fuzz_artifact.py times reads.
    outcomes = [fuzz.check(m, time_limit=float("inf"))
                for m in fuzz.mutations(artifact_bytes, 600, seed=1)]
    bad = [o for o in outcomes if o.result not in ("rejected", "loaded")]
    assert not bad, bad[:3]
    assert sum(o.result == "rejected" for o in outcomes) > 400


@pytest.fixture(scope="module")
def entropy_bytes() -> bytes:
    torch.manual_seed(0)
    model = build_model("lenet300", {"width": 0.1})
    with torch.no_grad():  # sparse, so the entropy coders' position streams are exercised
        for p in model.parameters():
            p.mul_((torch.rand_like(p) > 0.7).to(p.dtype))
    header = artifact_header.model_header(arch={"arch": "lenet300", "kwargs": {"width": 0.1}},
                                   edits=[], input_shape=(1, 28, 28), num_classes=10)
    policy = model_io.codec_policy({"entropy": True})
    return encode_artifact(header, model_io.state_tensors(model), policy)


@pytest.mark.parametrize("kind", sorted(fuzz.LIES))
def test_resealed_lies_are_rejected_or_valid(artifact_bytes: bytes, entropy_bytes: bytes,
                                             kind: str) -> None:
    """Valid checksum, lying header: reader, rebuild and inspect reject it or load a model."""
    rng = random.Random(kind)
    outcomes = [fuzz.check(fuzz.lie(data, rng, kind), inspect=True, time_limit=60.0)
                for data in (artifact_bytes, entropy_bytes) for _ in range(3)]
    bad = [o for o in outcomes if o.result not in ("rejected", "loaded")]
    assert not bad, bad[:3]


def test_reseal_keeps_the_checksum_valid(artifact_bytes: bytes) -> None:
    data = fuzz.reseal(artifact_bytes, lambda h: h.update(note="edited"))
    assert decode_artifact(data).header["note"] == "edited"
    lying = fuzz.reseal(artifact_bytes, lambda h: h["streams"][0].update(shape=[2**40]))
    with pytest.raises(ArtifactError, match="declares"):
        decode_artifact(lying)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(ArtifactError):
        decode_artifact(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), sealed=st.booleans())
def test_any_truncation_is_rejected(artifact_bytes: bytes, cut: int, sealed: bool) -> None:
    data = artifact_bytes[:cut % len(artifact_bytes)]
    if sealed and len(data) > 40:
        body = data[:-16]  # re-sealed: the 128-bit digest of format version 2
        data = body + checksum(body)
    with pytest.raises(ArtifactError):
        decode_artifact(data)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(pos=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_any_bit_flip_is_detected(artifact_bytes: bytes, pos: int, bit: int) -> None:
    buf = bytearray(artifact_bytes)
    buf[pos % len(buf)] ^= 1 << bit
    with pytest.raises(ArtifactError):
        decode_artifact(bytes(buf))
