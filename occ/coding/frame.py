"""The frame every occ.coding stream shares: a tag byte, side bytes, entropy-coded words.

::

    u8      tag           codec-specific (format version and mode)
    varint  side_len
    bytes   side          tables, counts, raw bit fields, in the order they are used
    bytes   words         constriction's ANS coder output (little-endian u32 words), to the
                          end, less the zero bytes that end its last word (the decoder pads
                          them back: about 1.4 bytes a stream)

Symbols are coded with constriction's ``AnsCoder`` (asymmetric numeral systems): it costs
the same bytes as range coding and decodes faster. ANS is a stack, so ``Sink`` keeps every
``encode(symbols, model)`` call and pushes them in reverse at ``finish``; the decoder then
pops them in the order they were given. ``Source.finish`` refuses trailing side bytes and
requires the coder to end exactly empty, which catches most malformed streams (the
container's checksum catches the rest).
"""

from __future__ import annotations

from collections.abc import Iterator

import constriction
import numpy as np

from occ.coding.bitio import ByteReader, ByteWriter

# Symbols decoded per call where a stream may hold many more symbols than bytes (a long
# run of zeros costs almost nothing): temporaries stay O(CHUNK) beyond the output itself.
CHUNK = 1 << 20


class Sink:
    """Where an encoder writes: ``side`` (bytes) and ``encode`` (entropy-coded symbols)."""

    def __init__(self) -> None:
        self.side = ByteWriter()
        self._pushes: list[tuple[np.ndarray, constriction.stream.model.Model]] = []

    def encode(self, symbols: np.ndarray, model: constriction.stream.model.Model) -> None:
        """Code ``symbols`` (int32) under ``model``, after everything encoded before."""
        if len(symbols):
            self._pushes.append((symbols.astype(np.int32, copy=False), model))

    def finish(self, tag: int) -> bytes:
        """The framed stream."""
        coder = constriction.stream.stack.AnsCoder()
        for symbols, model in reversed(self._pushes):
            coder.encode_reverse(symbols, model)
        side = self.side.getvalue()
        head = ByteWriter()
        head.u8(tag)
        head.varint(len(side))
        words = coder.get_compressed().astype("<u4", copy=False).tobytes()
        return head.getvalue() + side + _trimmed(words)


def _trimmed(words: bytes) -> bytes:
    """``words`` without the zero bytes that end its last word (at most 3)."""
    end = len(words)
    while end > len(words) - 3 and end > 0 and words[end - 1] == 0:
        end -= 1
    return words[:end]


class Source:
    """Reads a framed stream: ``tag``, ``side`` (a ByteReader) and ``decode`` (symbols)."""

    def __init__(self, data: bytes) -> None:
        r = ByteReader(data)
        self.tag = r.u8()
        self.side = ByteReader(r.blob(r.remaining()))
        words = r.rest()
        words += bytes(-len(words) % 4)  # the last word's zero bytes, trimmed by the encoder
        try:
            self._coder = constriction.stream.stack.AnsCoder(
                np.frombuffer(words, dtype="<u4").astype(np.uint32))
        except Exception as err:  # constriction's own error types
            raise ValueError(f"entropy-coded words: {err}") from None

    def decode(self, model: constriction.stream.model.Model, count: int) -> np.ndarray:
        """The next ``count`` symbols (int32) under ``model``."""
        if count == 0:
            return np.zeros(0, dtype=np.int32)
        try:
            return self._coder.decode(model, count)
        except Exception as err:  # constriction's own error types
            raise ValueError(f"entropy decoder: {err}") from None

    def decode_chunks(self, model: constriction.stream.model.Model, count: int,
                      chunk: int = CHUNK) -> Iterator[np.ndarray]:
        """The next ``count`` symbols in pieces of at most ``chunk`` (bounded memory)."""
        for start in range(0, count, chunk):
            yield self.decode(model, min(chunk, count - start))

    def finish(self) -> None:
        """Raise if side bytes or coded words were left over (a malformed stream)."""
        self.side.done()
        if not self._coder.is_empty():
            raise ValueError("entropy-coded data left over after the last symbol")


def frame_parts(data: bytes) -> tuple[int, int, int]:
    """(tag, side bytes, word bytes) of a framed stream, for size accounting."""
    r = ByteReader(data)
    tag = r.u8()
    side = r.varint(r.remaining())
    return tag, side, len(data) - r.pos - side


class Parts:
    """Size accounting collected while decoding: side bytes and coded bits per part kind.

    Kinds: ``positions``, ``values``, ``tables``, ``signs``, ``side`` (counts, constants).
    The range coder's words are shared by all coded parts; ``split`` attributes them in
    proportion to each part's coded information (its entropy under the stored model).
    """

    def __init__(self) -> None:
        self.side: dict[str, int] = {}
        self.bits: dict[str, float] = {}

    def add_side(self, kind: str, nbytes: int) -> None:
        """Count ``nbytes`` side bytes of ``kind``."""
        self.side[kind] = self.side.get(kind, 0) + nbytes

    def add_bits(self, kind: str, bits: float) -> None:
        """Count ``bits`` of range-coded information of ``kind``."""
        self.bits[kind] = self.bits.get(kind, 0.0) + bits

    def split(self, total: int, word_bytes: int) -> dict[str, int]:
        """Bytes per kind adding up to ``total`` (the stream's length).

        ``word_bytes`` (the range-coded words) are shared out by coded bits; whatever is
        neither attributed side data nor words (tag, lengths, counts) is ``side``.
        """
        out = dict(self.side)
        coded = sum(self.bits.values())
        given = 0
        if coded > 0:
            for k, b in self.bits.items():
                share = int(word_bytes * b / coded)
                out[k] = out.get(k, 0) + share
                given += share
        out["side"] = out.get("side", 0) + total - sum(self.side.values()) - given
        return {k: v for k, v in out.items() if v}
