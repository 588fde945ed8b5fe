"""Deployment runtime: run an occ ONNX file in onnxruntime, with early exit that really stops.

An early-exit model exported with ``occ export --format onnx-qdq`` is one graph that runs
every exit and picks per row with ``Where`` (any ONNX runtime can use it as is, at full
cost). Its ``metadata_props`` also say where to cut it: ``occ_exit_cuts`` names the tensor
each segment hands to the next (the uint8 output of the QuantizeLinear the next segment
reads, so every integer kernel stays whole), with the calibrated ``exit_thresholds`` and
``exit_criterion``. :class:`ExitSession` cuts the graph there (``onnx.utils.Extractor``)
into one onnxruntime session per segment and runs them in turn, like occ's own
``EarlyExitNet``: after each segment its head scores the rows still running, those that
pass the threshold stop, the others go on. A batch-1 request that leaves at the first
exit runs the first segment and its head only.

Why a wrapper and not ONNX ``If``: per-row early stop needs control flow on data; an
``If`` per exit nests the rest of the network in subgraphs, and onnxruntime's QDQ fusions
and thread pools work per graph. Sessions per segment keep each segment a plain,
fully-fused integer graph, and the decision is a few numpy operations on (B, K) logits.

    from occ.deploy.runtime import open_onnx
    model = open_onnx("model.int8.onnx", threads=1)
    logits = model.run(x)            # (B, K) float32; x: (B, C, H, W) float32
    model.last_exit                  # (B,) exit each row took (len(points) = the end)
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from occ import safe_json
from occ.errors import CheckpointError
from occ.limits import MAX_RECIPE_BYTES


def ort_session(data: bytes | str, threads: int = 1) -> Any:
    """An onnxruntime CPU session with every graph optimisation and ``threads`` intra-op
    threads (one inter-op thread: the graphs here are chains)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # the NCHWc notice on saved graphs is not for users
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


FLOAT_WEIGHTED = ("Conv", "FusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul",
                  "FusedMatMul")
"""Float kernels of weighted layers in onnxruntime's optimised graph (integer ones are
QLinearConv, QGemm, MatMulInteger ...)."""


def float_kernels(data: bytes) -> dict[str, str]:
    """{node name: op type} of the weighted layers onnxruntime runs as float kernels in the
    graph ``data``, as its CPU session optimises it. In a QDQ graph a conv is fused into
    QLinearConv only when its input, weight and output all go through Q/DQ: an op the
    quantizer does not cover after it (LeakyReLU, Tanh, ELU) leaves it float."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="occ-ort-") as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
    return {node.name or node.output[0]: node.op_type for node in graph.node
            if node.op_type in FLOAT_WEIGHTED}


def _session(model: Any, threads: int) -> Any:
    data = model if isinstance(model, (str, bytes)) else model.SerializeToString()
    return ort_session(data, threads)


def leaves(logits: np.ndarray, criterion: str, threshold: float,
           previous: np.ndarray | None = None) -> np.ndarray:
    """(B,) bool: rows that exit here; numpy twin of ``occ.techniques.early_exit.net.leaves``."""
    if criterion == "agreement":
        if previous is None:
            return np.zeros(len(logits), dtype=bool)
        diff = np.abs(logits - previous).reshape(len(logits), -1)
        return diff.max(axis=1) < threshold
    x = logits.astype(np.float32)
    shifted = x - x.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # log_softmax
    if criterion == "confidence":
        return np.exp(logp.max(axis=1)) >= threshold
    entropy = -(np.exp(logp) * logp).sum(axis=1) / math.log(max(x.shape[1], 2))
    return entropy <= threshold


class PlainSession:
    """A graph run whole: ``run(x)`` returns its first output (the logits).

    An occ early-exit export without cuts (the float export, where every exit runs and the
    graph picks per row; an int8 one whose stage dropped every exit) also outputs ``exit``,
    each row's exit index. With ``early_exit`` (its metadata says it is one), ``exits``
    counts its exits from its outputs (one ``exit<e>_logits`` per head, and the end), and
    ``last_exit`` holds each row's index after ``run``, checked to be one of them; else
    ``exits`` is None and ``exit`` is not read.
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1,
                 early_exit: bool = False) -> None:
        self.path = str(path)
        self.meta: dict[str, str] = {}  # the file's metadata_props (``open_onnx`` sets it)
        self.session = _session(self.path, threads)
        self.input = self.session.get_inputs()[0].name  # "input" in occ's; others vary
        self.last_exit: np.ndarray | None = None
        names = [o.name for o in self.session.get_outputs()]
        heads = sum(1 for n in names if n.startswith("exit") and n.endswith("_logits"))
        ours = early_exit and names[:2] == ["logits", "exit"]
        self.exits = heads + 1 if ours else None

    def input_shape(self) -> list[int | str]:
        """The graph input's declared shape (names or None for dynamic sizes)."""
        return list(self.session.get_inputs()[0].shape)

    @property
    def batch(self) -> int | None:
        """The graph's static batch size (``occ export --batch-size N``); None: dynamic."""
        return static_batch(self.input_shape())

    def run(self, x: np.ndarray) -> np.ndarray:
        """(B, K) logits of ``x`` (B, C, H, W), any B: a static-batch graph runs it in
        pieces of its batch (``in_pieces``).

        Raises:
            CheckpointError: the ``exit`` output is not one integer per row, each one of
                the ``exits`` (a file's graph computes it: it is data, like the metadata).
        """
        if self.exits is None:
            return in_pieces(lambda b: self.session.run(None, {self.input: b})[0], x,
                             self.batch)
        taken: list[np.ndarray] = []

        def one(b: np.ndarray) -> np.ndarray:
            logits, exit_ = self.session.run(None, {self.input: b})[:2]
            exit_ = np.asarray(exit_)
            if (exit_.shape != (len(b),) or not np.issubdtype(exit_.dtype, np.integer)
                    or exit_.size and not (exit_.min() >= 0 and exit_.max() < self.exits)):
                raise CheckpointError(f"the graph's 'exit' output must be one exit index "
                                      f"in [0, {self.exits - 1}] per row, got "
                                      f"{exit_.dtype} {exit_.shape}", where=self.path)
            taken.append(exit_.astype(np.int64))
            return logits

        logits = in_pieces(one, x, self.batch)
        self.last_exit = np.concatenate(taken)[:len(x)]  # the padding rows come last
        return logits


def static_batch(shape: list[Any]) -> int | None:
    """The batch size a declared input ``shape`` fixes (None: dynamic, a name or unset)."""
    first = shape[0] if shape else None
    return first if isinstance(first, int) and first > 0 else None


def in_pieces(run: Any, x: np.ndarray, batch: int | None) -> np.ndarray:
    """``run(x)`` for a graph that takes exactly ``batch`` rows (None: any): ``x`` in pieces of
    ``batch`` rows, the last one padded by repeating its last row, and the padding's output
    rows dropped. Rows are independent in inference, so the result is ``run`` row by row."""
    if batch is None or len(x) == batch:
        return run(x)
    outs = []
    for start in range(0, len(x), batch):
        piece = x[start:start + batch]
        short = batch - len(piece)
        if short:
            piece = np.concatenate([piece, np.repeat(piece[-1:], short, axis=0)])
        outs.append(run(piece)[:batch - short])
    return np.concatenate(outs)


class ExitSession:
    """An occ early-exit ONNX file run segment by segment (see the module docstring)."""

    def __init__(self, proto: Any, threads: int = 1) -> None:
        import onnx.utils

        meta = {p.key: p.value for p in proto.metadata_props}
        self.meta = meta
        cuts = safe_json.loads(meta["occ_exit_cuts"], max_bytes=MAX_RECIPE_BYTES,
                               error=CheckpointError, where="occ_exit_cuts",
                               what="the ONNX metadata")
        if not (isinstance(cuts, list) and cuts and all(isinstance(c, str) for c in cuts)):
            raise CheckpointError("must list the tensor names to cut at", where="occ_exit_cuts")
        try:
            self.thresholds = [float(t) for t in meta.get("exit_thresholds", "").split(",")]
        except ValueError:
            raise CheckpointError("must be comma-separated numbers",
                                  where="exit_thresholds") from None
        self.criterion = meta.get("exit_criterion", "")
        if len(cuts) != len(self.thresholds):
            raise CheckpointError("occ_exit_cuts and exit_thresholds differ in length",
                                  where="exit_thresholds")
        extractor = onnx.utils.Extractor(proto)
        self.inputs = ["input", *cuts]
        self.segments = [_session(extractor.extract_model([self.inputs[e]],
                                                          [f"exit{e}_logits", cuts[e]]), threads)
                         for e in range(len(cuts))]
        self.final = _session(extractor.extract_model([cuts[-1]], ["final_logits"]), threads)
        self.last_exit: np.ndarray | None = None

    def input_shape(self) -> list[int | str]:
        """The graph input's declared shape (names or None for dynamic sizes)."""
        return list(self.segments[0].get_inputs()[0].shape)

    def run(self, x: np.ndarray) -> np.ndarray:
        """(B, K) logits, each row's from the exit it took (``last_exit`` says which).

        occ exports early-exit graphs with a dynamic batch only (rows that go on after an
        exit are fewer); a static-batch one is refused by onnxruntime on the first
        smaller batch."""
        batch, last = len(x), len(self.segments)
        rows = np.arange(batch)
        out: np.ndarray | None = None
        taken = np.full(batch, last, dtype=np.int64)
        h, previous = x, None
        for e, session in enumerate(self.segments):
            logits, h = session.run(None, {self.inputs[e]: h})  # (b, K), hand-over tensor
            go = leaves(logits, self.criterion, self.thresholds[e], previous)
            if go.all() and out is None:  # the whole batch leaves (batch 1: one check)
                self.last_exit = np.full(batch, e, dtype=np.int64)
                return logits
            if go.any():
                if out is None:
                    out = np.empty((batch, logits.shape[1]), dtype=logits.dtype)
                out[rows[go]] = logits[go]
                taken[rows[go]] = e
                if go.all():
                    self.last_exit = taken
                    return out
                stay = ~go
                h, rows, logits = h[stay], rows[stay], logits[stay]
            previous = logits
        final = self.final.run(None, {self.inputs[-1]: h})[0]
        self.last_exit = taken
        if out is None:
            return final
        out[rows] = final
        return out


def open_onnx(path: str | os.PathLike[str], threads: int = 1) -> PlainSession | ExitSession:
    """The runtime for an ONNX file: exits per segment when its metadata has cuts.

    Only the exit path needs the weights in the proto (it cuts the graph); a plain graph is
    handed to onnxruntime by path, which reads its external data itself. Either way the
    external data is checked first (``check_external_data``).

    Raises:
        CheckpointError: the file's external data (``check_external_data``) is refused.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    proto = onnx.load(str(path), load_external_data=False)
    external = check_external_data(proto, path)
    meta = {p.key: p.value for p in proto.metadata_props}
    session: PlainSession | ExitSession
    if "occ_exit_cuts" in meta:
        if external:
            load_external_data_for_model(proto, os.path.dirname(os.path.abspath(path)))
        try:
            session = ExitSession(proto, threads)
        except CheckpointError as err:  # "occ_exit_cuts: ..." names the file's metadata
            raise CheckpointError(err.message, where=f"{path}: metadata {err.where}") from None
    else:
        del proto  # onnxruntime loads the file again from its path
        session = PlainSession(path, threads, early_exit="exit_points" in meta)  # occ's
    session.meta = meta  # the file's metadata_props, read once
    return session


def check_external_data(proto: Any, path: str | os.PathLike[str]) -> int:
    """Check the files an ONNX model keeps its tensors in (its *external data*, for models
    past protobuf's 2 GiB) before onnx or onnxruntime reads them; return how many tensors
    keep their data there.

    occ's own exports have none. A downloaded file names them: every location must be a
    plain relative path inside the model's folder, and a regular file (no FIFO, device or
    kernel pseudo-file). onnx reads a file once *per tensor* that names it (from its
    ``offset``, ``length`` bytes or to the end), so what is charged against
    ``OCC_MAX_ARTIFACT_BYTES`` is every tensor's read, not every file once: one 25 MB file
    named by 80 tensors was 2 GB read.

    Raises:
        CheckpointError: a location outside the folder, a file ``check_input_file``
            refuses, an offset or length that is not a non-negative integer, or reads over
            the limit together.
    """
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

    from occ.limits import MAX_ARTIFACT_BYTES, check_input_file

    folder = os.path.dirname(os.path.abspath(path))
    sizes: dict[str, int] = {}
    total = count = 0
    for tensor in _get_all_tensors(proto):
        if not uses_external_data(tensor):
            continue
        try:
            info = ExternalDataInfo(tensor)
        except ValueError as err:  # a negative or non-numeric offset / length
            raise CheckpointError(f"external data of tensor {tensor.name[:80]!r}: {err}",
                                  where=str(path)) from None
        location = info.location
        if location not in sizes:
            parts = location.replace("\\", "/").split("/")
            if not location or os.path.isabs(location) or ".." in parts or ":" in location:
                raise CheckpointError(f"external data location {location!r} is not a file "
                                      "inside the model's folder; refused", where=str(path))
            sizes[location] = check_input_file(
                os.path.join(folder, location), limit=MAX_ARTIFACT_BYTES,
                error=CheckpointError, what="ONNX external data file")
        left = max(sizes[location] - (info.offset or 0), 0)
        total += left if info.length is None else min(info.length, left)
        count += 1
        if total > MAX_ARTIFACT_BYTES.value():
            raise CheckpointError(
                f"its {count} external tensors (the last in {location!r}) would read "
                f"{total:,} bytes, over the {MAX_ARTIFACT_BYTES.hint()} (a file is read once "
                "for every tensor that names it); refused before reading", where=str(path))
    return count
