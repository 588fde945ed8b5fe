"""Codec ``ctx``: quantized weight matrices under contexts (issue 20).

A pruned, per-channel quantized weight seen as rows (output channels) × columns is far
from i.i.d.; an order-0 coder (``cat``) leaves on the table:

- *positions*: rows and columns differ in density (``occ.coding.ctxmask``: density
  classes), and set cells cluster (``occ.coding.ctxnb``: cells in passes under their
  neighbours);
- *signs*: neighbouring nonzeros mostly share a sign (``occ.coding.signs``);
- *values*: every surviving integer of a row sits above the row's magnitude floor ``m_r``
  (``occ.coding.floors``); a value is coded as ``sign(q)·(|q| - m_r + 1)`` (or, with the
  signs apart, ``|q| - m_r + 1``), under one of a few tables chosen by ``m_r``
  (``floors.bucket``).

Every choice (classes, passes, signs apart, mode, each table's kind) is made per tensor
by counted bits. Stream (the shared frame, ``occ.coding.frame``)::

    tag     0x30 (signs inside the values) or 0x40 (SIGNS_APART) | value mode (PLAIN: one
            table of q; FLOOR: m_r + one table of shifted values; BUCKETS: m_r + one table
            per bucket of m_r) | LOG (0x08: every table a ``logtable.LogTable``) | KINDS
            (0x04: each table preceded by a u8 kind: 0 exact ``categorical.Table``, 1 log,
            2 binned ``bintable.BinTable``, 3 learned) | LOG | KINDS (0x0C: every group
            learned: ``occ.coding.learned``, its alphabet in place of a table)
    side    varint rows R, varint k (nonzeros)
            [mask: flags, slope, offset, class tables, [``ctxnb`` grid width and
            adjustments]]  (0 < k < n)
            [signs: varint grid width, 11 u8 probabilities]  (SIGNS_APART)
            PLAIN: value table | FLOOR/BUCKETS: m table, then one value table per bucket
    words   classes, mask bits by pass and context, signs by context, m_r, values by bucket

Everything the decoder needs to group symbols (the cell contexts of a pass, the buckets)
is known before those symbols are decoded, so each group is one vectorised ANS call.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from occ.coding import bintable, categorical, ctxmask, ctxnb, floors, learned, signs, tablekinds
from occ.coding.categorical import MAX_SPAN, Table, decode_symbols, encode_symbols
from occ.coding.frame import Parts, Sink, Source
from occ.coding.logtable import LogTable
from occ.coding.tablekinds import BINNED, EXACT, LEARNED, LOGT, Group, Model

VERSION = 0x30
SIGNS_APART = 0x40  # tag: as VERSION, but values are magnitudes; signs come first (``signs``)
PLAIN, FLOOR, BUCKETS = 0, 1, 2
LOG = 8  # tag bit: the value tables are LogTables (rounded counts), not exact Tables
KINDS = 4  # tag bit: each value table is preceded by its kind (EXACT, LOGT, BINNED, LEARNED)
UNIFORM_TAG = {EXACT: 0, LOGT: LOG, LEARNED: LOG | KINDS}  # tag bits: every group one kind
# the value tables' kind a tag names (None: each table's kind precedes it)
TAG_KIND = {**{bits: kind for kind, bits in UNIFORM_TAG.items()}, KINDS: None}
WIDE = 24  # distinct values from which binned tables are worth trying
LEARN = True  # whether value groups may be coded under learned models (off: an ablation)
MAX_FLOOR = 1 << 32  # ctx takes integers of up to 32 bits: no larger magnitude exists


def _value_plan(values: np.ndarray, magnitudes: np.ndarray,
                rows: floors.Rows) -> tuple[float, int, list[Group]]:
    """(bits, mode, [(table, symbols-array, its coded bits, their entropy part) ...] in
    decode order, m table first) for the nonzeros' ``values`` (row-major, and their
    ``magnitudes``) seen as ``rows``.

    Modes are compared with exact tables, each counted from one histogram of (bucket,
    shifted value); the kind of each table is chosen when writing (comparing modes under
    binned tables too changed no benchmark stream by more than a few bytes, at twice the
    encoding time)."""
    plain = Table.fit(values)
    if plain is None:
        raise ValueError("ctx: values span more than 2^16 integers")
    m_table = Table.fit(rows.m - 1)
    shifted = floors.shifted(values, magnitudes, rows.floor)
    split = _bucket_tables(shifted, rows) if m_table is not None else None
    if split is None:
        tables = [plain]
    else:  # one bucket: the same tables as FLOOR
        tables = [plain, m_table, split[0]] + (split[1] if len(split[1]) > 1 else [])
    costed = categorical.coded_bits_of(tables)  # (coded bits, entropy bits) per table
    bits = [coded for coded, _ in costed]
    best: tuple[float, int, list[int]] = (bits[0], PLAIN, [0])
    if split is not None:
        cost = bits[1] + bits[2]
        if cost < best[0]:
            best = (cost, FLOOR, [1, 2])
        if len(split[1]) > 1:
            cost = sum([bits[1]] + bits[3:])
            if cost < best[0]:
                best = (cost, BUCKETS, [1] + list(range(3, len(tables))))
    cost, mode, chosen = best
    return cost, mode, [(tables[i], symbols) + costed[i] for i, symbols in
                        zip(chosen, _groups(values, rows, shifted, mode), strict=True)]


def _bucket_tables(shifted: np.ndarray, rows: floors.Rows) -> tuple[Table, list[Table]] | None:
    """(the table of every shifted value, one table per bucket present, ascending), from
    one joint histogram; None when the values span more than MAX_SPAN."""
    lo, hi = int(shifted.min()), int(shifted.max())
    span = hi - lo + 1
    if span > MAX_SPAN:
        return None
    present = np.bincount(rows.row_ctx, minlength=floors.N_BUCKETS).nonzero()[0]
    if len(present) == 1:
        one = Table.from_histogram(lo, np.bincount(shifted - lo, minlength=span))
        return one, [one]
    key = (rows.row_ctx * span - lo).repeat(rows.lengths)  # (bucket, value)
    key += shifted
    joint = np.bincount(key, minlength=floors.N_BUCKETS * span).reshape(floors.N_BUCKETS, span)
    return Table.from_histogram(lo, joint.sum(0)), \
        [Table.from_histogram(lo, joint[b]) for b in present]


def _groups(values: np.ndarray, rows: floors.Rows, shifted: np.ndarray,
            mode: int) -> list[np.ndarray]:
    """The symbol arrays of ``mode``, in decode order (m first, then by bucket)."""
    if mode == PLAIN:
        return [values]
    if mode == FLOOR:
        return [rows.m - 1, shifted]
    order, per_bucket = floors.by_bucket(rows.row_ctx, rows.lengths)
    by_bucket = np.split(shifted[order], np.cumsum(per_bucket)[:-1])
    return [rows.m - 1] + [group for group in by_bucket if len(group)]


def _write_values(sink: Sink, groups: list[Group]) -> int:
    """Append the value groups with the cheapest tables; returns the tag bits used."""
    costs = tablekinds.kind_costs(groups, WIDE, LEARN)
    uniform = tablekinds.uniform_bits(costs)
    mixed = sum(min(b for b, _ in c.values()) + 8 for c in costs)
    if min(uniform.values()) <= mixed:
        kind = min(uniform, key=uniform.get)
        for c, (table, symbols, _, _) in zip(costs, groups, strict=True):
            _write_group(sink, kind, c[kind][1], table, symbols)
        return UNIFORM_TAG[kind]
    for c, (table, symbols, _, _) in zip(costs, groups, strict=True):
        kind = min(c, key=lambda k: c[k][0])
        sink.side.u8(kind)
        _write_group(sink, kind, c[kind][1], table, symbols)
    return KINDS


def _write_group(sink: Sink, kind: int, model: Model, table: Table,
                 symbols: np.ndarray) -> None:
    if kind == EXACT:
        table.write(sink.side)
        encode_symbols(sink, table.symbols(symbols), table)
    elif kind == LOGT:
        model.write(sink.side)
        if len(model.present) > 1:
            sink.encode(table.symbols(symbols), model.model())
    elif kind == LEARNED:
        model.write(sink)
    else:
        model.write(sink.side)
        sink.encode(model.symbols(symbols), model.model())


def encode(array: np.ndarray, cols: int | None = None,
           shape: tuple[int, ...] | None = None) -> tuple[bytes, dict]:
    """Code a flat integer array seen as rows of ``cols`` values (codec ``ctx``).

    ``shape`` (the tensor's own) only suggests neighbourhoods for the positions
    (``occ.coding.ctxnb``); the stream records what it used.
    """
    if array.dtype.kind not in "iu" or array.dtype.itemsize > 4:
        raise ValueError(f"ctx codes integer tensors of up to 32 bits, not {array.dtype}")
    n = len(array)
    cols = cols if cols and n % cols == 0 else max(n, 1)
    rows = n // cols if n else 0
    live = array != 0
    nz = live.nonzero()[0]  # of bools: branch-free, several times faster on a dense mask
    k = len(nz)
    sink = Sink()
    sink.side.varint(rows)
    sink.side.varint(k)
    mode = PLAIN
    mask = live.reshape(rows, cols)
    row_counts = mask.sum(1, dtype=np.intp)  # = count_nonzero(mask, axis=1), no wrapper
    if 0 < k < n:
        _encode_mask(sink, mask, nz, shape, (row_counts, mask.sum(0, dtype=np.intp)))
    version = VERSION
    if k:
        values = array[nz].astype(np.int64)
        magnitudes = np.abs(values)
        rows_of = floors.Rows.of(magnitudes, row_counts)
        cost, mode, groups = _value_plan(values, magnitudes, rows_of)
        negative = values < 0
        if 0 < np.count_nonzero(negative) < k:
            apart = _signs_apart(array, nz, negative, magnitudes, rows_of, cost, shape, cols)
            if apart is not None:
                version = SIGNS_APART
                signs.encode(sink, negative, apart[0])
                _, mode, groups = apart[1]
        mode |= _write_values(sink, groups)
    return sink.finish(version | mode), {}


def _signs_apart(array: np.ndarray, nz: np.ndarray, negative: np.ndarray,
                 magnitudes: np.ndarray, rows_of: floors.Rows, cost: float,
                 shape: tuple[int, ...] | None, cols: int) -> tuple[signs.SignPlan, tuple] | None:
    """(the signs' plan, the magnitudes' value plan) when coding the signs apart costs
    less than ``cost`` (the signed values' bits); None when it does not."""
    grid = np.sign(array).astype(np.int8, copy=False).reshape(-1, cols)  # = signs.sign_grid
    widths = ctxnb.widths(shape, cols)
    if not signs.coherent(grid, widths):
        return None
    sign_plan = signs.plan(nz, negative, grid.shape[0], cols, widths[:SIGN_WIDTHS], grid)
    if sign_plan.bits >= len(nz):  # signed tables spend at most about a bit per sign
        return None
    apart = _value_plan(magnitudes, magnitudes, rows_of)
    return (sign_plan, apart) if apart[0] + sign_plan.bits < cost else None


TRY_OPTIONS = 4  # class configurations (cheapest first) neighbour passes may refit: the
# cheapest, and the one with the least side information among the rest (neighbours
# often make finer classes redundant)
WORTH_MORE = 0.98  # ... the second only when neighbours saved 2 % on the first
MAX_LAYOUTS = 2  # grid widths the positions try
SIGN_WIDTHS = 2  # ... and the signs


def _encode_mask(sink: Sink, mask: np.ndarray, nz: np.ndarray,
                 shape: tuple[int, ...] | None,
                 line_counts: tuple[np.ndarray, np.ndarray]) -> None:
    """The positions: density classes alone (``ctxmask``) or with neighbours (``ctxnb``),
    whichever the counts say is smaller. ``line_counts``: nonzeros per row and column."""
    rows, cols = mask.shape
    plan = ctxmask.MaskPlan(nz, rows, cols, line_counts)
    flat = mask.reshape(-1)
    layouts = [ctxnb.layout(mask, b) for b in ctxnb.widths(shape, cols)[:MAX_LAYOUTS]
               if ctxnb.clustered(mask, b, line_counts=line_counts)]
    best: tuple[float, ctxmask.ClassOption, ctxnb.NeighbourPlan | None] = \
        (plan.bits, plan.options[0], None)
    tried = plan.options[:TRY_OPTIONS]
    candidates = tried[:1] + ([min(tried[1:], key=lambda o: o.side_bits)] if len(tried) > 1
                              else [])
    lines = (np.divmod(nz, cols) if plan.lines is None else plan.lines) if layouts else None
    for i, option in enumerate(candidates if layouts else []):
        if i == 1 and best[0] > WORTH_MORE * plan.bits:
            break
        two_pass = ctxnb.fit(nz, lines, option, layouts)
        if two_pass is not None and option.side_bits + two_pass.bits < best[0]:
            best = (option.side_bits + two_pass.bits, option, two_pass)
    _, option, two_pass = best
    if two_pass is None:
        ctxmask.encode(sink, flat, option)
        return
    ctxmask.write_head(sink, dataclasses.replace(option, slope=two_pass.slope,
                                                 offset=two_pass.offset), ctxnb.NEIGHBOURS)
    ctxnb.write(sink, two_pass)
    classes = ctxmask.cell_classes(option.flags, option.row_cls, option.col_cls)
    state = next(lay.state for lay in layouts if lay.b == two_pass.b)
    ctxnb.encode(sink, mask, classes, two_pass, state)


def _decode_mask(source: Source, rows: int, cols: int, k: int,
                 parts: Parts | None) -> np.ndarray:
    head = ctxmask.read_head(source, rows, cols, ctxnb.NEIGHBOURS, parts)
    if head.flags & ctxnb.NEIGHBOURS:
        return ctxnb.decode(source, head, rows, cols, k, parts)
    return ctxmask.decode_cells(source, head, k, parts)


def _limits(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def decode(data: bytes, meta: dict, dtype: np.dtype, count: int,
           parts: Parts | None = None) -> np.ndarray:
    """Inverse of ``encode``: ``count`` values of the integer ``dtype``."""
    if dtype.kind not in "iu":
        raise ValueError(f"ctx decodes integer tensors, not {dtype}")
    source = Source(data)
    if source.tag & 0xF0 not in (VERSION, SIGNS_APART) or source.tag & 0x03 > BUCKETS:
        raise ValueError(f"ctx stream tag {source.tag:#x} unknown")
    mode = source.tag & 0x0F
    rows = source.side.varint(count)
    k = source.side.varint(count)
    if count and (rows < 1 or count % rows):
        raise ValueError(f"{rows} rows do not divide {count} values")
    cols = count // rows if rows else 0
    if 0 < k < count:
        where = _decode_mask(source, rows, cols, k, parts)
    else:
        where = np.arange(k, dtype=np.int64)
    out = np.zeros(count, dtype=dtype)
    if k:
        start = source.side.pos
        negative = signs.decode(source, where, rows, cols, parts) \
            if source.tag & 0xF0 == SIGNS_APART else None
        values = _decode_values(source, mode, where // cols, k, parts)
        if negative is not None:
            if int(values.min()) < 1:
                raise ValueError("a magnitude below 1 where signs are coded apart")
            values = np.where(negative, -values, values)
        if parts is not None:
            parts.add_side("tables", source.side.pos - start)
        lo, hi = _limits(dtype)
        if int(values.min()) < lo or int(values.max()) > hi or not np.all(values):
            raise ValueError(f"decoded values outside {dtype} or zero")
        out[where] = values.astype(dtype)
    source.finish()
    return out


def _read(source: Source, total: int, parts: Parts | None, kind: int | None) -> np.ndarray:
    """``total`` values under the next table, of ``kind`` (None: a kind byte first)."""
    if kind is None:
        kind = source.side.u8()
    if kind == LOGT:
        lt = LogTable.read(source.side, total)
        symbols = source.decode(lt.model(), total) if len(lt.present) > 1 else \
            np.zeros(total, dtype=np.int32)
        if parts is not None:
            parts.add_bits("values", _information(lt.weights(), symbols))
        return lt.present[symbols] + lt.lo
    if kind == LEARNED:
        return learned.read(source, total, parts)
    if kind == BINNED:
        bt = bintable.BinTable.read(source.side)
        alphabet = bt.alphabet
        symbols = source.decode(bt.model(), total) if len(alphabet) > 1 else \
            np.zeros(total, dtype=np.int32)
        if parts is not None:
            parts.add_bits("values", _information(bt.weights(), symbols))
        return alphabet[symbols]
    if kind != EXACT:
        raise ValueError(f"ctx table kind {kind} unknown")
    table = Table.read(source.side, total)
    if parts is not None:
        parts.add_bits("values", table.bits())
    return table.values(decode_symbols(source, table, total))


def _information(weights: np.ndarray, symbols: np.ndarray) -> float:
    """Bits of ``symbols`` under a model with these (unnormalised) weights."""
    if len(weights) < 2:
        return 0.0
    return float(-np.log2(weights / weights.sum())[symbols].sum())


def _decode_values(source: Source, mode: int, row_of: np.ndarray, k: int,
                   parts: Parts | None) -> np.ndarray:
    kind = TAG_KIND[mode & (LOG | KINDS)]
    mode &= 0x03
    if mode == PLAIN:
        return _read(source, k, parts, kind)
    starts = np.concatenate(([0], (row_of[1:] != row_of[:-1]).nonzero()[0] + 1))  # runs
    lengths = np.diff(starts, append=k)
    m = _read(source, len(starts), parts, kind) + 1
    if int(m.min()) < 1 or int(m.max()) > MAX_FLOOR:
        raise ValueError("row magnitude floor outside [1, 2^32]")
    floor = np.repeat(m, lengths)
    if mode == FLOOR:
        shifted = _read(source, k, parts, kind)
    else:
        order, per_bucket = floors.by_bucket(floors.bucket(m), lengths)
        grouped = [_read(source, int(count), parts, kind) for count in per_bucket if count]
        shifted = np.empty(k, dtype=np.int64)
        shifted[order] = np.concatenate(grouped)
    if not np.all(shifted):
        raise ValueError("shifted value of zero")
    return np.sign(shifted) * (np.abs(shifted) + floor - 1)
