"""The torch-free config of ``type: prune`` (``occ validate`` and ``occ order`` read it)."""


from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from occ.config import check
from occ.techniques.prune.schedule import ONESHOT, parse_schedule
from occ.techniques.spec import ModelRef, StageConfig

if TYPE_CHECKING:
    pass

Method = Literal["magnitude", "channel", "id", "surp"]

MAX_CHANNEL_RATIO = 0.95
"""The largest share of a layer's channels ``method: channel`` removes (Torch-Pruning's
``max_pruning_ratio``): the most ``channel_ratio`` may ask, the cap of ``flops_reduction``."""

# Options that only some methods read: setting one for another method is an error, not
# silently ignored.
_OWNERS: dict[str, tuple[str, ...]] = {
    "sparsity": ("magnitude", "surp"), "schedule": ("magnitude", "surp"),
    "scope": ("magnitude", "channel"), "alpha": ("surp",), "importance": ("channel",),
    "channel_ratio": ("channel",), "keep": ("id",), "flops_reduction": ("channel", "id"),
    "samples": ("channel", "id"),
}


@dataclass(frozen=True)
class PruneConfig(StageConfig):
    """Config of a ``prune`` stage.

    Attributes:
        method: ``magnitude`` | ``channel`` | ``id`` | ``surp``.
        sparsity: share of weights set to zero (magnitude, surp), in [0, 1).
        scope: ``global`` ranks weights (magnitude) or channels (channel) over all layers
            together; ``layer`` prunes every layer by the same share. Unset: ``global``
            for magnitude, ``layer`` for channel (Torch-Pruning's default).
        schedule: how sparsity rises while fine-tuning: ``oneshot`` | ``linear`` | ``agp``
            | ``geometric``, or ``{kind, steps}`` (``{steps: 5}`` = linear in 5 steps).
        epochs: fine-tuning epochs after (magnitude: while) pruning; 0 = none.
        lr: fine-tuning learning rate.
        optimizer: ``sgd`` | ``adam`` | ``adamw``.
        distill: fine-tune against the uncompressed model's outputs (KD, T=4, alpha=0.9).
        exclude: Conv2d / Linear layer names whose weights stay dense (magnitude, surp) or
            whose output channels are all kept (channel, id).
        importance: channel ranking (channel): ``l1`` | ``l2`` | ``bn_scale`` | ``taylor``.
        channel_ratio: share of every layer's channels removed (channel), in [0, 0.95].
        keep: share of every layer's channels kept (id), in (0, 1].
        flops_reduction: share of the MACs to remove (channel, id), in (0, 1).
        samples: train-split inputs used for activations (id) or gradients (taylor).
        alpha: SuRP's rate parameter (surp), > 0.
    """

    method: Method = "magnitude"
    sparsity: float = 0.5
    scope: Literal["global", "layer"] | None = None
    schedule: Any = ONESHOT  # Schedule, or a kind name; normalised to Schedule below
    epochs: int = 0
    lr: float = 0.01
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    distill: bool = False
    exclude: tuple[str, ...] = ()
    importance: Literal["l1", "l2", "bn_scale", "taylor"] = "l1"
    channel_ratio: float | None = None
    keep: float | None = None
    flops_reduction: float | None = None
    samples: int = 1000
    alpha: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", parse_schedule(self.schedule))
        object.__setattr__(self, "exclude", tuple(self.exclude))
        check(0.0 <= self.sparsity < 1.0, "sparsity", f"must be in [0, 1), got {self.sparsity}")
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.samples >= 1, "samples", f"must be >= 1, got {self.samples}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        ratio, keep, flops = self.channel_ratio, self.keep, self.flops_reduction
        check(ratio is None or 0.0 <= ratio <= MAX_CHANNEL_RATIO, "channel_ratio",
              f"must be in [0, {MAX_CHANNEL_RATIO}] (no layer loses more than that share of "
              "its channels; Torch-Pruning skips a layer that would, so a higher ratio "
              f"pruned less), got {ratio}")
        check(keep is None or 0.0 < keep <= 1.0, "keep", f"must be in (0, 1], got {keep}")
        check(flops is None or 0.0 < flops < 1.0, "flops_reduction",
              f"must be in (0, 1), got {flops}")
        self._check_owners()
        size = {"channel": "channel_ratio", "id": "keep"}.get(self.method)
        if size is not None:
            given = [k for k in (size, "flops_reduction") if getattr(self, k) is not None]
            check(len(given) == 1, given[-1] if given else size,
                  f"method {self.method} needs exactly one of {size}, flops_reduction"
                  + ("; got both" if given else ""))

    def references(self) -> tuple[ModelRef, ...]:
        """The ``exclude`` layers (checked against the model before the first stage)."""
        return tuple(ModelRef(f"exclude[{i}]", name, "layer")
                     for i, name in enumerate(self.exclude))

    def _check_owners(self) -> None:
        defaults = {f.name: f.default for f in fields(self)}
        for name, owners in _OWNERS.items():
            value = getattr(self, name)
            default = ONESHOT if name == "schedule" else defaults[name]
            check(self.method in owners or value == default, name,
                  f"applies to method {' / '.join(owners)}, not {self.method}")

    @property
    def resolved_scope(self) -> Literal["global", "layer"]:
        """``scope``, or the method's default when unset."""
        if self.scope is not None:
            return self.scope
        return "layer" if self.method == "channel" else "global"

    @property
    def category(self) -> str:
        """Unstructured methods act on single weights; structured ones on channels."""
        return "channel" if self.method in ("channel", "id") else "weight"
