"""The interpolative decomposition (ID) that Model Preserving Compression prunes with.

For activations A (rows = examples, columns = channels) an ID of size k picks k columns
I and an interpolation matrix T (k x n) with A ~= A[:, I] @ T. From a column-pivoted QR
A P = Q [R11 R12; 0 R22] (Businger-Golub pivoting, ``scipy.linalg.qr(pivoting=True)``):
I = the first k pivots, T = [I_k, R11^-1 R12] P^T, and the error ||A - A[:, I] T||_2 =
||R22||_2 exactly, since Q is orthonormal.

Pivoted QR needs only R, not A: if A = Q0 R0 then the pivoted QR of R0 has the same
pivots and R. So activations are reduced batch by batch (``tsqr_update``, a "tall skinny
QR") to an n x n triangle and never held whole; a conv layer's (N*H*W) x C activations of
a thousand images cost C x C memory (``TallSkinnyQR`` buffers a few million values).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch

# Pivots whose diagonal is below this share of the largest are numerically dependent;
# T is then found by least squares rather than by back-substitution.
_RANK_TOL = 1e-10


@torch.no_grad()
def tsqr_update(r: torch.Tensor | None, block: torch.Tensor) -> torch.Tensor:
    """The R factor (float64, at most n rows) of ``[r; block]``; block is (rows, n)."""
    block = block.detach().to(torch.float64)
    stacked = block if r is None else torch.cat([r, block])
    return torch.linalg.qr(stacked, mode="r").R


class TallSkinnyQR:
    """Streams row blocks of activations into their R factor, a few large QRs at a time.

    Blocks are buffered until they hold ``flush_elements`` values (and at least n rows),
    then reduced with ``tsqr_update``: one QR per flush rather than per batch.
    """

    def __init__(self, flush_elements: int = 1 << 22) -> None:
        self.flush_elements = flush_elements
        self.r: torch.Tensor | None = None
        self._blocks: list[torch.Tensor] = []
        self._rows = 0

    def add(self, block: torch.Tensor) -> None:
        """Append a (rows, n) block."""
        self._blocks.append(block.detach().to(torch.float64))
        self._rows += block.shape[0]
        if self._rows * block.shape[1] >= self.flush_elements and self._rows >= block.shape[1]:
            self._flush()

    def _flush(self) -> None:
        if self._blocks:
            self.r = tsqr_update(self.r, torch.cat(self._blocks))
            self._blocks, self._rows = [], 0

    def result(self) -> torch.Tensor:
        """The R factor of every row added so far."""
        self._flush()
        if self.r is None:
            raise ValueError("no activations were collected")
        return self.r


def _norm2_estimate(m: np.ndarray, iters: int = 40) -> float:
    """||m||_2 by power iteration (a lower bound, close after a few dozen steps)."""
    if min(m.shape) <= 32:
        return float(np.linalg.norm(m, ord=2)) if m.size else 0.0
    v = np.linalg.norm(m, axis=0)
    norm = np.linalg.norm(v)
    if norm == 0:
        return 0.0
    v /= norm
    sigma2 = 0.0
    for _ in range(iters):
        w = m.T @ (m @ v)
        sigma2 = float(np.linalg.norm(w))
        if sigma2 == 0:
            return 0.0
        v = w / sigma2
    return float(np.sqrt(sigma2))


@dataclass
class Decomposition:
    """A column-pivoted QR of activations: enough for the ID of every size.

    Attributes:
        r: (min(m, n), n) upper-triangular factor of the m x n activations, columns in
            pivot order.
        perm: (n,) the pivot order: ``A[:, perm] = Q @ r``.
    """

    r: np.ndarray
    perm: np.ndarray
    _norm_estimate: float | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        """Number of columns (channels)."""
        return self.r.shape[1]

    def error(self, k: int) -> float:
        """||A - A[:, I] T||_2 = ||R22||_2 for the ID of size ``k``."""
        if k >= min(self.r.shape):
            return 0.0
        return float(np.linalg.norm(self.r[k:, k:], ord=2))

    def relative_error(self, k: int, *, exact: bool = True) -> float:
        """``error(k) / ||A||_2`` (0 for all-zero activations).

        ``exact=False`` estimates both norms by power iteration: much cheaper for wide
        layers, and close enough to rank layers against each other.
        """
        if exact:
            norm, err = self.error(0), self.error(k)
        else:
            if self._norm_estimate is None:
                self._norm_estimate = _norm2_estimate(self.r)
            norm = self._norm_estimate
            err = _norm2_estimate(self.r[k:, k:]) if k < min(self.r.shape) else 0.0
        return err / norm if norm > 0 else 0.0

    def interpolate(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ID of size ``k``: kept columns (ascending) and T (k, n), rows in that order."""
        if not 1 <= k <= self.n:
            raise ValueError(f"ID size must be in [1, {self.n}], got {k}")
        r = self.r
        if r.shape[0] < k:  # fewer examples than kept columns: R's missing rows are zero
            r = np.vstack([r, np.zeros((k - r.shape[0], self.n))])
        r11, r12 = r[:k, :k], r[:k, k:]
        diag = np.abs(np.diag(r11))
        if diag.size and diag.min() > _RANK_TOL * max(diag.max(), np.finfo(float).tiny):
            coef = scipy.linalg.solve_triangular(r11, r12)
        else:  # dependent pivots: any exact combination will do; take the least-norm one
            coef = np.linalg.lstsq(r11, r12, rcond=None)[0]
        t_piv = np.concatenate([np.eye(k), coef], axis=1)  # (k, n), pivot order
        t = np.empty_like(t_piv)
        t[:, self.perm] = t_piv
        order = np.argsort(self.perm[:k], kind="stable")
        return self.perm[:k][order], t[order]


def decompose(a: np.ndarray | torch.Tensor) -> Decomposition:
    """Column-pivoted QR of ``a`` (rows x n) or of its R factor from ``tsqr_update``."""
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[1]
    r, perm = scipy.linalg.qr(a, mode="r", pivoting=True)
    return Decomposition(r=np.triu(np.asarray(r)[:n]), perm=np.asarray(perm))


__all__ = ["Decomposition", "TallSkinnyQR", "decompose", "tsqr_update"]
