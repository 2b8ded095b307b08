"""Knowledge distillation (Hinton et al., 2015) from a teacher checkpoint of this framework.

An option group of every LightningModule (``--model.init_args.distill.teacher <ckpt>
--model.init_args.distill.alpha 0.9 --model.init_args.distill.temperature 4``), so any student
version keeps its usual options. The training loss becomes::

    (1 - alpha) * CE(student, targets) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

with ``s``/``t`` the student's/teacher's logits on the same (augmented, mixed) batch and the KL
the one Hinton et al. and ``F.kl_div(log_softmax(s / T), softmax(t / T))`` compute: the teacher's
softened distribution is the target. CE is the module's own loss (label smoothing, mixup/cutmix
soft targets). ``T^2`` keeps the soft term's gradient scale independent of ``T`` (section 2).

The teacher is a plain attribute, not a submodule: it is never in the ``state_dict``, the
optimizer, the EMA copy or the DDP wrapper, and a student's checkpoint is a normal checkpoint
(``distill`` is not saved in its hyperparameters) that ``test``, ``predict``, ``load_model`` and
export read without the teacher file. The teacher is read only when a fit starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .errors import UserError

__all__ = ["Distillation", "Teacher", "distillation_loss"]


@dataclass
class Distillation:
    """Knowledge distillation from a teacher.

    Args:
        teacher: A checkpoint written by this framework's ``fit`` (any version; same classes).
        alpha: Weight of the distillation term; ``1 - alpha`` weighs the cross-entropy.
        temperature: Softmax temperature ``T`` of both distributions in the distillation term.
    """

    teacher: str
    alpha: float = 0.9
    temperature: float = 4.0


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, summed over classes, mean over the batch."""
    log_p_student = F.log_softmax(student.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class Teacher:
    """The frozen teacher beside a student: loaded at fit start, eval mode, no gradient, never saved.

    Args:
        config: The ``distill`` option group.
        num_classes: The student's classes (the teacher must have as many).
    """

    def __init__(self, config: Distillation, num_classes: int) -> None:
        if not 0.0 <= config.alpha <= 1.0:
            raise UserError(f"distill.alpha must be in [0, 1], got {config.alpha}")
        if not config.temperature > 0:
            raise UserError(f"distill.temperature must be > 0, got {config.temperature}")
        self.config = config
        self.num_classes = num_classes
        self.network: torch.nn.Module | None = None
        self._scale: torch.Tensor | None = None  # student-normalised -> teacher-normalised images
        self._shift: torch.Tensor | None = None
        self._memory_format = torch.contiguous_format

    def load(self, datamodule: Any = None, channels_last: bool = True) -> None:
        """Reads the teacher checkpoint (one clear line if it is missing, not ours or has other classes).

        The student's batches are normalised with ``datamodule.mean``/``std``; the teacher's own
        normalisation (from its checkpoint) is applied on top when they differ.
        """
        from .inference import load_model

        path = self.config.teacher
        try:
            classifier = load_model(path)
        except UserError as err:
            raise UserError(f"distill.teacher: {err}") from None
        if classifier.model.num_classes != self.num_classes:
            raise UserError(
                f"distill.teacher {path} has {classifier.model.num_classes} classes but the student "
                f"has {self.num_classes}; distil from a teacher trained on the same classes"
            )
        network = classifier.model.eval().requires_grad_(False)
        self.network = network.to(memory_format=torch.channels_last) if channels_last else network
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        self._scale = self._shift = None
        if mean is not None and std is not None:
            mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            scale, shift = std / classifier.std, (mean - classifier.mean) / classifier.std
            if not (torch.allclose(scale, torch.ones_like(scale)) and torch.allclose(shift, torch.zeros_like(shift))):
                self._scale, self._shift = scale, shift

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's float32 logits for the student's batch: no graph, bf16 autocast on a GPU."""
        if self.network is None:
            raise RuntimeError("the teacher is loaded when a fit starts (Teacher.load)")
        if next(self.network.parameters()).device != images.device:
            self.network.to(images.device)
        if self._scale is not None:
            images = images * self._scale.to(images.device) + self._shift.to(images.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=images.is_cuda):
            return self.network(images.contiguous(memory_format=self._memory_format)).float()

    def loss(
        self, images: torch.Tensor, student_logits: torch.Tensor, ce: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, the two terms to log) for a training batch whose cross-entropy is ``ce``."""
        kd = distillation_loss(student_logits, self.logits(images), self.config.temperature)
        alpha = self.config.alpha
        return (1 - alpha) * ce + alpha * kd, {"train/loss_ce": ce.detach(), "train/loss_kd": kd.detach()}

    # Shared, never copied: Lightning's EMA deep-copies the module (the copy needs no teacher of its own).
    def __deepcopy__(self, memo: dict[int, Any]) -> Teacher:
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "network": None}  # a pickled module reloads its teacher at fit start
