"""Measured latency: median and p90 wall time of a forward pass at given batch sizes.

For each batch size the model runs ``warmup`` untimed forwards, then ``runs`` timed ones,
one at a time, under ``torch.inference_mode``. On CUDA each run is timed with a pair of
CUDA events (GPU time of the kernels the forward launched, synchronised after every run);
on the CPU with ``time.perf_counter_ns`` around the call. Reported per batch size: median,
p90, mean and min in milliseconds, the median per sample and the throughput it implies.

The inputs are the rows of ``sample`` when given (``occ eval`` passes real test inputs:
an early-exit model's time depends on how many rows leave early), cycled to fill each
batch; otherwise seeded standard-normal inputs of ``input_shape``.

Quantized layers in occ are fake-quantized: they compute in float, so their latency is
that of the float model plus the fake-quant ops — a simulation, not int8 latency; the
result says so in ``notes`` whenever such layers are present.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

FAKE_QUANT_NOTE = ("fake-quant layers run in float (a simulation of integer arithmetic): "
                   "this is not int8 latency; occ export --format onnx-qdq writes the "
                   "integer graph and occ eval model.onnx --latency times it")
EXIT_NOTE = ("early exit: latency depends on the inputs (how many rows leave early); "
             "measured on the inputs given")


def _inputs(sample: torch.Tensor | None, input_shape: Sequence[int], batch: int,
            device: torch.device) -> torch.Tensor:
    """(batch, *input_shape) on ``device``: ``sample``'s rows cycled, else seeded noise."""
    if sample is None or len(sample) == 0:
        gen = torch.Generator().manual_seed(0)
        return torch.randn(batch, *input_shape, generator=gen).to(device)
    reps = -(-batch // len(sample))  # ceil
    return sample.repeat(reps, *([1] * (sample.dim() - 1)))[:batch].to(device)


def _timer(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    """A function timing one call in milliseconds (CUDA events on CUDA, else the clock)."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def cuda_time(fn: Callable[[], Any]) -> float:
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return cuda_time

    def cpu_time(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e6

    return cpu_time


def check_timing(runs: int, warmup: int) -> None:
    """Refuse a timing that measures nothing: ``runs`` below 1 or ``warmup`` below 0.

    Raises:
        ValueError: naming both.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")


def summary(batch: int, times_ms: list[float]) -> dict[str, Any]:
    """One batch size's timings (ms per run) summarised: median, p90, mean, min, per sample
    and samples per second (None when the median is 0)."""
    t = np.asarray(times_ms, dtype=np.float64)
    median = float(np.median(t))
    return {"batch_size": batch, "runs": len(t), "median_ms": median,
            "p90_ms": float(np.percentile(t, 90)), "mean_ms": float(t.mean()),
            "min_ms": float(t.min()), "per_sample_ms": median / batch,
            "samples_per_s": 1000.0 * batch / median if median > 0 else None}


def _notes(model: nn.Module) -> list[str]:
    notes = []
    if any(min(getattr(m, "occ_bits", (32, 32))) < 32 for m in model.modules()):
        notes.append(FAKE_QUANT_NOTE)
    if callable(getattr(model, "exit_metrics", None)):
        notes.append(EXIT_NOTE)
    return notes


def measure_latency(model: nn.Module, input_shape: Sequence[int],
                    device: torch.device | str = "cpu", batch_sizes: Sequence[int] = (1, 64), *,
                    warmup: int = 10, runs: int = 100,
                    sample: torch.Tensor | None = None) -> dict[str, Any]:
    """Median and p90 forward latency of ``model`` at each batch size.

    Args:
        model: run in eval mode (its mode is restored afterwards).
        input_shape: (C, H, W) of one input.
        device: where to run; the model is moved there.
        batch_sizes: the batch sizes to time, each separately.
        warmup: untimed forwards before the timed ones, per batch size.
        runs: timed forwards per batch size.
        sample: real inputs (N, *input_shape) to draw batches from.

    Returns:
        ``{"device", "device_name", "threads", "torch", "timer", "warmup", "runs",
        "batches": [{"batch_size", "runs", "median_ms", "p90_ms", "mean_ms", "min_ms",
        "per_sample_ms", "samples_per_s"}, ...], "notes": [...]}`` (JSON).
    """
    check_timing(runs, warmup)
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    device = torch.device(device)
    timer = _timer(device)
    was_training = model.training
    model.to(device).eval()
    batches = []
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                x = _inputs(sample, input_shape, batch, device)
                for _ in range(warmup):
                    model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                call = functools.partial(model, x)
                batches.append(summary(batch, [timer(call) for _ in range(runs)]))
    finally:
        model.train(was_training)
    return {"device": str(device), "device_name": device_name(device),
            "threads": torch.get_num_threads(), "torch": torch.__version__.split("+")[0],
            "timer": "cuda events" if device.type == "cuda" else "perf_counter_ns",
            "warmup": warmup, "runs": runs, "batches": batches, "notes": _notes(model)}


def device_name(device: torch.device) -> str:
    """The GPU's name for a CUDA device, else the CPU's (``cpu_name``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def cpu_name() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's word for it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_calls(fn: Callable[[Any], Any], inputs: Sequence[Any], *, warmup: int,
               runs: int) -> list[float]:
    """Wall time (ms) of ``runs`` calls ``fn(inputs[i % len(inputs)])`` after ``warmup``
    untimed ones. Cycling through different inputs matters for early exit (a fixed input
    always leaves at the same exit)."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    times = []
    for i in range(runs):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter_ns()
        fn(x)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return times


def batches_of(sample: torch.Tensor, batch: int, count: int) -> list[np.ndarray]:
    """``count`` float32 batches of ``batch`` consecutive rows of ``sample`` (wrapping)."""
    n = len(sample)
    out = []
    for i in range(count):
        idx = (np.arange(batch) + i * batch) % n
        out.append(np.ascontiguousarray(sample[idx].numpy(), dtype=np.float32))
    return out
