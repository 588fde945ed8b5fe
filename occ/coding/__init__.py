"""Lossless coding of artifact streams, near the entropy limit (issues 7 and 20).

The codecs here are registered with the container by ``occ.artifact.codecs`` (which also
holds the per-tensor ``Policy`` that ``entropy_code`` installs: smallest candidate wins,
raw included); the header and its accounting live in ``occ.artifact``.

- ``ints`` (``cat``): integers under a fitted categorical model, zeros inline or as
  positions (``positions``: bitmask, gaps, or alive rows/columns + bitmask);
  ``floats`` (``fbp``): any dtype by bit pattern, byte plane by byte plane; ``rice``:
  small integer tensors as Golomb-Rice codes; ``surp``: SuRP index streams.
- ``adaptive`` (``ctx``): weight matrices under contexts. Positions: ``ctxmask`` (row /
  column density classes) and ``ctxnb`` (cells in passes under their neighbours);
  signs: ``signs`` (in the same passes, under their neighbours' signs); values under
  ``categorical`` tables, ``logtable`` (rounded counts) or ``bintable`` (binned
  magnitudes).
- ``frame``: the stream frame and ANS coder; ``bitio``: varints and bit packing.

numpy + constriction only (no torch), so the codecs are cheap to import.
"""
