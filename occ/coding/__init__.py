"""Lossless coding of artifact streams, near the entropy limit (issue 7).

- ``codecs``: registers ``cat``, ``fbp``, ``surp`` and ``ctx`` with ``occ.artifact.container`` and
holds the
  per-tensor ``Policy`` that ``entropy_code`` installs (smallest candidate wins, raw
  included).
- ``ints`` (``cat``): integers under a fitted categorical model, zeros inline or as
  positions; ``floats`` (``fbp``): any dtype by bit pattern, byte plane by byte plane;
  ``surp`` (``surp``): SuRP index streams, replayed by the decoder.
- ``adaptive`` (``ctx``, issue 20): weight matrices under row / column contexts; its mask
  model is ``ctxmask``. ``header_v2``: the compact (binary) stream table of the header.
- ``positions``: where the nonzeros are (bitmask, gaps, or alive rows/columns + bitmask).
- ``categorical``: the stored model tables; ``frame``: the stream frame and ANS coder;
  ``bitio``: varints and bit packing.
- ``accounting``: ``size_breakdown(path)``: bytes per stream and kind, entropy and zstd.

numpy + constriction only (no torch), so the codecs are cheap to import.
"""
