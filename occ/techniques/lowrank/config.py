"""The torch-free config of ``type: lowrank`` (``occ validate`` and ``occ order`` read it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from occ.config import check
from occ.techniques.spec import ModelRef, StageConfig

Method = Literal["auto", "svd", "tucker2"]

DEFAULT_ENERGY = 0.9
"""The target when neither ``rank`` nor ``energy`` is given."""


@dataclass(frozen=True)
class LowRankConfig(StageConfig):
    """Config of a ``lowrank`` stage.

    Attributes:
        method: ``svd`` | ``tucker2`` | ``auto``. ``svd``: a Linear becomes two Linears
            (in -> r -> out); a Conv2d becomes a kxk conv with r outputs and a 1x1 conv.
            ``tucker2``: a Conv2d becomes 1x1 (in -> r_in), kxk core (r_in -> r_out),
            1x1 (r_out -> out), from the HOSVD of its in / out modes (Linears: ``svd``).
            ``auto``: per conv, the one of the two with fewer parameters at the target.
        rank: per-layer rank: an int >= 1 (capped at the layer's full rank; tucker2: both
            mode ranks) or a share of the full rank in (0, 1). Give ``rank`` or ``energy``.
        energy: per-layer share of the squared singular values kept, in (0, 1]: the
            smallest rank reaching it (tucker2: per mode). Neither given: energy 0.9.
        exclude: Conv2d / Linear layer names that are left whole.
        min_params_saving: a layer is factorised only when that removes at least this share
            of its parameters (and at least one), in [0, 1).
        epochs: fine-tuning epochs after factorising; 0 = none.
        lr: fine-tuning learning rate.
        optimizer: ``sgd`` | ``adam`` | ``adamw``.
        distill: fine-tune against the unfactorised model's outputs (KD, T=4, alpha=0.9).
    """

    method: Method = "auto"
    rank: int | float | None = None
    energy: float | None = None
    exclude: tuple[str, ...] = ()
    min_params_saving: float = 0.1
    epochs: int = 0
    lr: float = 0.01
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    distill: bool = False

    default_category = "factor"
    renames_modules = True  # a factorised layer becomes a Sequential of two

    def references(self) -> tuple[ModelRef, ...]:
        """The ``exclude`` layers (checked against the model before the first stage)."""
        return tuple(ModelRef(f"exclude[{i}]", name, "layer")
                     for i, name in enumerate(self.exclude))

    def __post_init__(self) -> None:
        object.__setattr__(self, "exclude", tuple(self.exclude))
        rank, energy = self.rank, self.energy
        check(rank is None or energy is None, "energy",
              "give one of rank (a rank or a share of the full rank) or energy (a share "
              "of the squared singular values); got both")
        if rank is not None:
            check(not isinstance(rank, bool) and isinstance(rank, (int, float)), "rank",
                  f"must be an int >= 1 or a share in (0, 1), got {rank!r}")
            if isinstance(rank, int):
                check(rank >= 1, "rank", f"an int rank must be >= 1, got {rank}")
            else:
                check(0.0 < rank < 1.0, "rank",
                      f"a share of the full rank must be in (0, 1), got {rank} "
                      "(an absolute rank is an int)")
        if energy is not None:
            check(not isinstance(energy, bool) and isinstance(energy, (int, float)), "energy",
                  f"must be a number in (0, 1], got {energy!r}")
            check(0.0 < energy <= 1.0, "energy", f"must be in (0, 1], got {energy}")
        check(0.0 <= self.min_params_saving < 1.0, "min_params_saving",
              f"must be in [0, 1), got {self.min_params_saving}")
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(len(set(self.exclude)) == len(self.exclude), "exclude",
              "names a layer twice")

    @property
    def target(self) -> tuple[str, float]:
        """``("rank", r)``, ``("share", s)`` or ``("energy", e)``: what sets each rank."""
        if self.rank is not None:
            return ("rank", float(self.rank)) if isinstance(self.rank, int) else \
                ("share", float(self.rank))
        return "energy", float(self.energy if self.energy is not None else DEFAULT_ENERGY)
