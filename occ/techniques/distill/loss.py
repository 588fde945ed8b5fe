"""Knowledge distillation (Hinton et al. 2015; FitNets hints, Romero et al. 2015).

``kd_loss`` is the formula; ``distill_loss_fn(teacher, ...)`` makes a loss hook for
``occ.training.fit`` in which the teacher runs in eval mode with no grad. Stages with a
``distill: true`` option use it so the original model teaches the compressed one while it
recovers; the ``distill`` stage uses it to train a smaller student.

The rest serves the ``distill`` stage: ``student_ref`` resolves a student spec against
the teacher's architecture, ``build_student`` builds it and checks it fits the teacher,
``inherit_channels_`` starts a slimmer student of the teacher's own architecture from the
teacher's strongest channels, and ``FeatureHints`` adds feature (hint) losses through
1×1 / linear adapters that are trained alongside the student and then dropped.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from occ.errors import ModelError, RecipeError
from occ.models import build_model, data_kwargs
from occ.models.names import ArchRef, arch_kind
from occ.models.zoo import builder_params
from occ.techniques.distill.config import KD_ALPHA, KD_TEMPERATURE
from occ.training import LossFn, default_loss
from occ.trust import TrustError


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *,
            temperature: float, alpha: float, hard: LossFn = default_loss) -> torch.Tensor:
    """(1 - alpha) * hard(student, targets) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T)).

    ``hard`` is the task's loss (``occ.training.task_loss``: cross-entropy on class targets).
    Float targets (regression): the soft term is the MSE to the teacher's outputs, and
    ``hard`` is the recipe's regression loss (MSE or L1).
    """
    hard_term = hard(student, targets, None)
    if targets.is_floating_point():
        soft = F.mse_loss(student.reshape(targets.shape), teacher.reshape(targets.shape))
        return (1.0 - alpha) * hard_term + alpha * soft
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    return (1.0 - alpha) * hard_term + alpha * soft


def distill_loss_fn(teacher: nn.Module, *, temperature: float = KD_TEMPERATURE,
                    alpha: float = KD_ALPHA,
                    hints: FeatureHints | None = None, hint_weight: float = 1.0,
                    hard: LossFn = default_loss) -> LossFn:
    """A ``fit`` loss hook: the student's outputs against ``teacher``'s on the same inputs.

    Args:
        teacher: runs in eval mode under ``no_grad``; it is never trained.
        temperature, alpha, hard: see ``kd_loss`` (``hard``: the task's loss).
        hints: feature hints between teacher and student layers; their mean-squared
            error, times ``hint_weight``, is added to the loss.
    """
    teacher.eval()

    def loss(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(inputs)
        if isinstance(outputs, (list, tuple)):  # early exits in train mode: every head learns
            total = torch.stack([kd_loss(o, t, targets, temperature=temperature, alpha=alpha,
                                         hard=hard) for o in outputs]).mean()
        else:
            total = kd_loss(outputs, t, targets, temperature=temperature, alpha=alpha,
                            hard=hard)
        if hints is not None:
            total = total + hint_weight * hints.loss()
        return total

    return loss


# ---------------------------------------------------------------------------------------------
# Students: a spec resolved against the teacher, built and checked before any training.


def student_ref(teacher: ArchRef, *, arch: str | None, kwargs: dict[str, Any],
                width: float | None, input_shape: Sequence[int], num_classes: int,
                where: str) -> ArchRef:
    """The architecture reference of a student spec (what the artifact rebuilds from).

    ``width`` (with no ``arch``) takes the teacher's own architecture and kwargs at
    ``width`` times the teacher's channel multiplier. A zoo student gets ``in_channels``,
    ``num_classes`` and ``input_hw`` from the teacher's kwargs (else from the data) unless
    its kwargs set them; a torchvision student gets ``num_classes`` and ``in_channels``.

    Raises:
        ModelError: ``width`` for a teacher whose builder has no width multiplier.
    """
    if arch is None:
        kind = arch_kind(teacher.arch)
        if kind == "torchvision" or (kind == "zoo" and "width" not in builder_params(
                teacher.arch)):
            raise ModelError(f"the teacher {teacher.arch} has no channel multiplier; "
                             "give student.arch (and its kwargs) instead", where=f"{where}.width")
        return ArchRef(teacher.arch, {**teacher.kwargs, **kwargs,
                                      "width": _scaled(teacher.kwargs.get("width", 1.0), width)})
    prefer = teacher.kwargs if arch_kind(teacher.arch) == "zoo" else None
    return ArchRef(arch, data_kwargs(arch, kwargs, tuple(input_shape), num_classes,
                                     prefer=prefer))


def _scaled(base: Any, factor: float) -> float | int:
    """The teacher's ``width`` times ``factor``: an int when the teacher's was an int and
    the product is whole (a builder whose width counts channels gets ``8``, not ``8.0``,
    which ``nn.Conv2d`` refuses), else a float."""
    product = float(base) * factor
    if isinstance(base, int) and not isinstance(base, bool) and product.is_integer():
        return int(product)
    return product


def _relocate(err: ModelError, where: str) -> ModelError:
    """A ModelError from ``build_model`` (``model.kwargs.x``) located at ``where.kwargs.x``."""
    inner = (err.where or "model").removeprefix("model")
    return ModelError(err.message, where=f"{where}{inner}")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


@torch.no_grad()
def build_student(ref: ArchRef, teacher: nn.Module, sample: torch.Tensor, *,
                  seed: int, where: str, trust_code: bool = False,
                  search: tuple[str, ...] = ()) -> nn.Module:
    """Build ``ref`` (weights seeded by ``seed``) and check it maps ``sample`` like ``teacher``.

    ``search``: folders a ``pkg.module:callable`` student is imported from (the recipe's).

    Raises:
        ModelError: the student does not build, does not run on the data's inputs, or its
            output shape differs from the teacher's.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            student = build_model(ref.arch, ref.kwargs, allow_callables=trust_code,
                                  search=search)
        except ModelError as err:
            raise _relocate(err, where) from None
        except TrustError as err:
            raise TrustError(err.message, where=f"{where}.arch") from None
    student.to(sample.device).eval()
    teacher.eval()
    expected = teacher(sample)
    try:
        got = student(sample)
    except (RuntimeError, ValueError, TypeError) as err:
        raise ModelError(f"{ref.arch} does not run on the data's {tuple(sample.shape[1:])} "
                         f"inputs: {_first_line(err)}", where=where) from None
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        shape = tuple(got.shape[1:]) if isinstance(got, torch.Tensor) else type(got).__name__
        raise ModelError(f"{ref.arch} {ref.kwargs} outputs {shape} per input but the teacher "
                         f"outputs {tuple(expected.shape[1:])}", where=where)
    return student.train()


def inherit_channels_(student: nn.Module, teacher: nn.Module, sample: torch.Tensor) -> bool:
    """Load into ``student`` the teacher's strongest channels; False when it cannot.

    Works when the student is the teacher's architecture at a smaller width (the same
    parameter names, every shape no larger): a copy of the teacher is thinned with
    Torch-Pruning's dependency graph, layer by layer in forward order, keeping each
    layer's output channels of largest group L1 norm (the filter and every parameter
    coupled to it, e.g. the next layer's weights that read it; a residual join's channels
    are kept or dropped together), until its shapes are the student's; its weights then
    become the student's. A student so started is a working network from its first step:
    a randomly initialised one, pushed by an overconfident teacher's large soft-target
    gradients, can lose most of its ReLUs in the first epoch and stay at chance.
    """
    import torch_pruning as tp  # (no torch.no_grad here: its tracing follows grad_fn)

    shapes = {k: v.shape for k, v in student.state_dict().items()}
    thin = copy.deepcopy(teacher).eval()
    own = thin.state_dict()
    if set(shapes) != set(own) or any(
            len(shapes[k]) != len(v.shape)
            or any(a > b for a, b in zip(shapes[k], v.shape, strict=True))
            for k, v in own.items()):
        return False
    try:
        graph = tp.DependencyGraph().build_dependency(thin, example_inputs=sample)
    except Exception:  # noqa: BLE001  (tracing runs the model's forward: anything can fail)
        return False
    importance = tp.importance.GroupMagnitudeImportance(p=1)
    for name, layer in list(thin.named_modules()):
        if not isinstance(layer, (nn.Conv2d, nn.Linear)) or f"{name}.weight" not in shapes:
            continue
        have, want = layer.weight.shape[0], shapes[f"{name}.weight"][0]
        if have <= want:
            continue
        fn = (tp.prune_conv_out_channels if isinstance(layer, nn.Conv2d)
              else tp.prune_linear_out_channels)
        scores = importance(graph.get_pruning_group(layer, fn, idxs=list(range(have))))
        keep = set(torch.argsort(scores, descending=True)[:want].tolist())
        graph.get_pruning_group(layer, fn, idxs=[i for i in range(have) if i not in keep]).prune()
    thinned = thin.state_dict()
    if any(thinned[k].shape != shapes[k] for k in shapes):
        return False
    student.load_state_dict(thinned)
    return True


# ---------------------------------------------------------------------------------------------
# Feature hints: match intermediate features through a trained adapter.


class _Adapter(nn.Module):
    """Maps a student feature onto a teacher feature's shape.

    Convolutional features (B, C, H, W) on both sides: a 1×1 conv C_s -> C_t, then average
    pooling to the teacher's H×W if it differs. Anything else: flatten and a linear layer.
    """

    def __init__(self, student: torch.Size, teacher: torch.Size) -> None:
        super().__init__()
        self.size = tuple(teacher[2:]) if len(teacher) == 4 else None
        if len(student) == 4 and len(teacher) == 4:
            self.map: nn.Module = nn.Conv2d(student[1], teacher[1], kernel_size=1)
        else:
            self.map = nn.Sequential(nn.Flatten(), nn.Linear(student[1:].numel(),
                                                             teacher[1:].numel()))
            self.size = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.map(x)
        if self.size is not None and tuple(y.shape[2:]) != self.size:
            y = F.adaptive_avg_pool2d(y, self.size)  # (B, C_t, H_t, W_t)
        return y


class FeatureHints:
    """Forward hooks on ``[teacher_layer, student_layer]`` pairs and one adapter per pair.

    ``loss()`` is the mean over pairs of MSE(adapter(student feature), teacher feature),
    from the latest forward passes of both models. Use as a context manager (or call
    ``close``) so the hooks are removed; the adapters belong to no model and are dropped.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, pairs: Sequence[Sequence[str]],
                 sample: torch.Tensor, *, where: str) -> None:
        self._feats: dict[tuple[str, int], torch.Tensor] = {}
        self._handles = []
        for i, (t_name, s_name) in enumerate(pairs):
            for side, model, name in (("teacher", teacher, t_name), ("student", student, s_name)):
                module = _layer(model, name, f"{where}[{i}]", side)
                self._handles.append(module.register_forward_hook(self._keep(side, i)))
        with torch.no_grad():
            teacher(sample)
            student(sample)
        self.adapters = nn.ModuleList(
            _Adapter(self._feats["student", i].shape, self._feats["teacher", i].shape)
            for i in range(len(pairs))).to(sample.device)
        self._feats.clear()

    def _keep(self, side: str, i: int):
        def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
            self._feats[side, i] = out[0] if isinstance(out, (tuple, list)) else out
        return hook

    def loss(self) -> torch.Tensor:
        """Mean hint MSE over the pairs (teacher features carry no gradient)."""
        terms = []
        for i, adapter in enumerate(self.adapters):
            s = adapter(self._feats["student", i])  # the teacher feature's shape, or flat
            terms.append(F.mse_loss(s, self._feats["teacher", i].detach().reshape(s.shape)))
        return torch.stack(terms).mean()

    def parameters(self) -> list[nn.Parameter]:
        """The adapters' parameters (train them with the student)."""
        return list(self.adapters.parameters())

    def close(self) -> None:
        """Remove the hooks and drop the kept features."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._feats.clear()

    def __enter__(self) -> FeatureHints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _layer(model: nn.Module, name: str, where: str, side: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = [n for n in modules if n]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise RecipeError(f"the {side} has no layer {name!r}; its layers: {shown}", where=where)


__all__ = ["FeatureHints", "build_student", "distill_loss_fn", "inherit_channels_", "kd_loss",
           "student_ref"]
