"""The classification system around a plain MobileNet: loss, metrics, optimisation, checkpoint contents.

``ImageClassifier`` owns loss, metrics and optimisation; the network itself is the plain
``nn.Module`` from :mod:`mobilenet_lab.models` (``self.model``), which is all that export needs.
The version classes (``MobileNetV1`` ... ``MobileNetV4ConvLarge``, :mod:`mobilenet_lab.versions`)
subclass it and only expose that version's own options with their defaults.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from .checkpoint import DESCRIPTION_KEY, averaged_weights, saved_description
from .compile import CompiledNetwork, CompileMode
from .distill import Distillation, Teacher
from .errors import UserError
from .models import ModelDescription, create_model
from .rng import gather_rng_states, this_rank_state
from .schedules import ScheduleCallable, WarmupCosine

__all__ = ["ImageClassifier", "CIFAR100_CLASSES", "architecture_diff", "attached_trainer"]

Stem = Literal["imagenet", "cifar"]


#: CIFAR-100's class count: the modules' default (the CLI links the data module's value).
CIFAR100_CLASSES = 100


def architecture_diff(saved: ModelDescription, ours: ModelDescription) -> list[str]:
    """``"key: checkpoint a vs config b"`` for each architecture option that differs."""
    a, b = saved.to_dict(), ours.to_dict()
    return [f"{k}: checkpoint {a.get(k)!r} vs config {b.get(k)!r}" for k in saved.architecture_differences(ours)]


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's trainer, or None when it is not attached to one (``module.trainer`` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def _default_optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def _default_schedule(optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int) -> WarmupCosine:
    return WarmupCosine(optimizer, total_steps, steps_per_epoch, warmup_epochs=1.0)


class ImageClassifier(L.LightningModule):
    """Cross-entropy training of a registered MobileNet with top-1/top-5 accuracy per stage.

    Args:
        model_name: Registered model name (``mobilenet_lab.models.list_models()``).
        model_options: ModelDescription fields other than name and num_classes (width, stem, dropout,
            version options); the rest take the version's defaults.
        num_classes: Output classes; the CLI links it from the data module.
        label_smoothing: Label smoothing of the cross-entropy loss.
        optimizer: Builds the optimizer from parameter groups (any ``torch.optim`` class).
        lr_scheduler: Builds the per-step LR schedule from (optimizer, total_steps, steps_per_epoch).
        weight_decay_on_norm_and_bias: Apply weight decay to BatchNorm and bias parameters too.
        channels_last: Run the network in channels-last memory format (faster on CPU and GPU).
        compile: ``torch.compile`` the network: true, or a mode (default, max-autotune-no-cudagraphs, reduce-overhead, max-autotune); ``compile_cache``: a file of compiled kernels kept between runs (:mod:`mobilenet_lab.compile`).
        weights: ``"torchvision"`` starts from torchvision's ImageNet weights (width 1.0).
        bn_momentum: Overrides every BatchNorm's momentum (PyTorch convention: weight of the new
            batch statistics; V3's paper value is 0.01, which lags the weights in short runs).
        lr_reference_batch_size: The optimizer's ``lr`` is stated for this global batch size and
            scaled linearly to the run's (``batch_size`` x devices), e.g. 128: lr 0.1 becomes
            0.4 at batch 512. None uses ``lr`` as given.
        finite_check_every: On an accelerator, a non-finite loss is recorded on the device and
            raised every this many steps (and before any checkpoint is written), so training
            never waits on the host each step. On the CPU it is checked every step.
        distill: Knowledge distillation from a teacher checkpoint (``distill.teacher``, ``alpha``,
            ``temperature``; :mod:`mobilenet_lab.distill`). Not saved in the checkpoint.
        test_time_flip: Validation, test and predict average the logits of each image and its
            horizontal mirror. An evaluation option: not saved, give it to ``test``/``validate``.
    """

    def __init__(
        self,
        model_name: str,
        model_options: dict[str, Any] | None = None,
        num_classes: int = CIFAR100_CLASSES,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: ScheduleCallable | None = _default_schedule,
        weight_decay_on_norm_and_bias: bool = False,
        channels_last: bool = True,
        compile: bool | CompileMode = False,
        compile_cache: str | None = None,
        weights: Literal["torchvision"] | None = None,
        bn_momentum: float | None = None,
        lr_reference_batch_size: int | None = None,
        finite_check_every: int = 50,
        distill: Distillation | None = None,
        test_time_flip: bool = False,
    ) -> None:
        super().__init__()
        # The version classes save their own arguments only: the CLI rebuilds a model from a
        # checkpoint's hyperparameters (``test --ckpt_path`` without a config).
        ignore = ["optimizer", "lr_scheduler", "distill", "test_time_flip"]
        if type(self) is not ImageClassifier:
            ignore += ["model_name", "model_options"]
        self.save_hyperparameters(ignore=ignore)
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if bn_momentum is not None and not 0.0 < bn_momentum <= 1.0:
            raise UserError(f"bn_momentum must be in (0, 1], got {bn_momentum}; set --model.init_args.bn_momentum")
        if lr_reference_batch_size is not None and lr_reference_batch_size < 1:
            raise UserError(f"lr_reference_batch_size must be >= 1, got {lr_reference_batch_size}")
        if finite_check_every < 1:
            raise UserError(f"finite_check_every must be >= 1, got {finite_check_every}")
        try:
            self.model = create_model(model_name, num_classes=num_classes, weights=weights, **(model_options or {}))
        except ValueError as err:
            raise UserError(f"model: {err}") from None
        if bn_momentum is not None:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.momentum = bn_momentum
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.teacher = Teacher(distill, num_classes) if distill is not None else None
        self.test_time_flip = test_time_flip
        self.compiled = CompiledNetwork(self.model, compile, compile_cache)
        # No per-update argument validation: it calls torch.unique, a host sync every step on a GPU.
        # Labels are range-checked once when the data set is read.
        top1 = dict(num_classes=num_classes, average="micro", validate_args=False)
        top5 = dict(top1, top_k=min(5, num_classes))
        self.train_acc = MulticlassAccuracy(**top1)
        self.val_acc = MulticlassAccuracy(**top1)
        self.val_acc_top5 = MulticlassAccuracy(**top5)
        self.test_acc = MulticlassAccuracy(**top1)
        self.test_acc_top5 = MulticlassAccuracy(**top5)
        self.test_confusion = MulticlassConfusionMatrix(num_classes, validate_args=False)
        self._first_nonfinite: torch.Tensor | None = None  # device-side: first step with a non-finite loss
        self.best_val_acc = 0.0
        self._planned_steps: int | None = None  # the run's total optimizer steps, fixed by its first fit
        self.class_names: list[str] = []  # filled from a checkpoint (predict without the data set)

    # ------------------------------------------------------------------ steps
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.compiled.network(images)

    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for validation, test and predict: with ``test_time_flip``, the mean of image and mirror."""
        logits = self(images)
        return (logits + self(images.flip(-1))) / 2 if self.test_time_flip else logits

    def configure_callbacks(self) -> list[L.Callback]:
        return [self.compiled] if self.compiled.active else []

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.teacher is not None:
            self.teacher.load(getattr(self.trainer, "datamodule", None), self.hparams.channels_last)

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        # Targets are class indices, or N x C probabilities after mixup/cutmix.
        return F.cross_entropy(logits.float(), targets, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch[0], batch[1]
        logits = self(images)
        loss = self._loss(logits, targets)
        if self.teacher is not None:
            loss, terms = self.teacher.loss(images, logits, loss)
            self.log_dict(terms)
        self._record_finite(loss)
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        self.train_acc(logits, hard)
        # Lightning turns progress-bar values into Python numbers after every step: free on the CPU,
        # a host sync per step on a GPU, where the bar shows the validation metrics only.
        on_cpu = loss.device.type == "cpu"
        self.log("train/loss", loss, prog_bar=on_cpu)
        self.log("train/acc", self.train_acc, prog_bar=on_cpu)
        return loss

    def _record_finite(self, loss: torch.Tensor) -> None:
        """Stops on a non-finite loss: at once on the CPU; on a GPU without a host sync per step."""
        if loss.device.type == "cpu":
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {self.current_epoch}, global step {self.global_step}"
                )
            return
        if self._first_nonfinite is None or self._first_nonfinite.device != loss.device:
            self._first_nonfinite = torch.full((), -1, dtype=torch.long, device=loss.device)
        first = self._first_nonfinite
        bad = ~torch.isfinite(loss.detach()) & (first < 0)
        first.copy_(torch.where(bad, self.global_step, first))
        if (self.global_step + 1) % self.hparams.finite_check_every == 0:
            self.raise_if_nonfinite()

    def raise_if_nonfinite(self) -> None:
        """Raises FloatingPointError if a non-finite loss was recorded on the device (one host sync)."""
        if self._first_nonfinite is None:
            return
        step = int(self._first_nonfinite)
        if step >= 0:
            raise FloatingPointError(
                f"loss is not finite (nan or inf) at global step {step} "
                f"(found at epoch {self.current_epoch}, step {self.global_step})"
            )

    def on_train_epoch_end(self) -> None:
        self.raise_if_nonfinite()

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch[0], batch[1]
        logits = self.evaluate(images)
        self.val_acc(logits, targets)
        self.val_acc_top5(logits, targets)
        self.log("val/loss", self._loss(logits, targets), prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        self.log("val/acc_top5", self.val_acc_top5)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        acc = self.trainer.callback_metrics.get("val/acc")
        if acc is not None:
            self.best_val_acc = max(self.best_val_acc, float(acc))
            self.log("hp_metric", self.best_val_acc, sync_dist=False)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch[0], batch[1]
        logits = self.evaluate(images)
        self.test_acc(logits, targets)
        self.test_acc_top5(logits, targets)
        self.test_confusion(logits, targets)
        self.log("test/loss", self._loss(logits, targets), sync_dist=True)
        self.log("test/acc", self.test_acc)
        self.log("test/acc_top5", self.test_acc_top5)
        return logits

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        images, names = batch[0], batch[1]
        return {"names": list(names), "probs": self.evaluate(images).float().softmax(1)}

    # ------------------------------------------------------------ optimisation
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Two groups: weights with decay, BatchNorm and bias parameters (1-D) without, unless asked."""
        if self.hparams.weight_decay_on_norm_and_bias:
            return [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameter_groups())
        reference = self.hparams.lr_reference_batch_size
        if reference:
            trainer = attached_trainer(self)
            batch = getattr(trainer.datamodule, "batch_size", None) if trainer is not None else None
            if batch is None:
                raise UserError("lr_reference_batch_size needs a data module with a batch_size")
            scale = batch * self.trainer.world_size * self.trainer.accumulate_grad_batches / reference
            for group in optimizer.param_groups:
                group["lr"] *= scale
        if self.lr_scheduler is None:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            raise UserError("the LR schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
        total = int(total)
        planned = self._planned_steps
        if planned is not None and planned != total:
            raise UserError(
                f"the checkpoint's run was planned for {planned} optimizer steps and its LR schedule ends there; "
                f"this fit asks for {total}. Resume it with the run's own trainer.max_epochs/max_steps to finish "
                "it; to train longer, start a new fit (the schedule is shaped over the whole run)"
            )
        self._planned_steps = total
        # Optimizer steps in one epoch (estimated_stepping_batches has just set up the train loader);
        # not total // max_epochs, which is wrong when max_steps ends the run first.
        batches = self.trainer.num_training_batches
        if math.isfinite(batches):
            steps_per_epoch = max(1, math.ceil(batches / self.trainer.accumulate_grad_batches))
        else:  # an iterable without length: the run is max_steps long, count it as one epoch
            steps_per_epoch = total
        scheduler = self.lr_scheduler(optimizer, total, steps_per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.raise_if_nonfinite()  # never write weights trained through a non-finite loss
        # Everything load_model() needs to rebuild the plain network, without this class.
        datamodule = getattr(attached_trainer(self), "datamodule", None)
        checkpoint[DESCRIPTION_KEY[0]] = {
            DESCRIPTION_KEY[1]: self.model.description.to_dict(),
            "class_names": list(getattr(datamodule, "class_names", None) or self.class_names),
            "image_size": int(getattr(datamodule, "image_size", 32)),
            "mean": [float(v) for v in getattr(datamodule, "mean", ())],
            "std": [float(v) for v in getattr(datamodule, "std", ())],
            "best_val_acc": self.best_val_acc,
            "planned_steps": self._planned_steps,  # the LR schedule's length; a resume must keep it
        }
        # Exact resume: dropout draws from the global RNG, which Lightning does not checkpoint.
        # One state per rank (every rank builds the checkpoint; rank 0 writes it).
        checkpoint["rng"] = {"torch": gather_rng_states(self, torch.get_rng_state())}
        if self.device.type == "cuda":
            checkpoint["rng"]["cuda"] = gather_rng_states(self, torch.cuda.get_rng_state(self.device))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        try:
            saved = saved_description(checkpoint)
        except ValueError as err:
            raise UserError(f"the checkpoint's model description is not valid: {err}") from None
        if saved is None:
            return
        trainer = attached_trainer(self)
        fitting = getattr(getattr(trainer, "state", None), "fn", None) == "fit"
        if averaged_weights(checkpoint) and not fitting:  # (a resumed fit restores the live weights too)
            rank_zero_info(f"evaluating the checkpoint's {averaged_weights(checkpoint)}")
        diff = architecture_diff(saved, self.model.description)
        if diff:
            pretty = ", ".join(diff)
            raise UserError(
                f"the checkpoint's architecture does not match the config ({pretty}); "
                "use the config the checkpoint was trained with"
            )
        self.best_val_acc = checkpoint["mobilenet_lab"].get("best_val_acc", 0.0)
        if fitting and self.lr_scheduler is not None:
            self._planned_steps = checkpoint["mobilenet_lab"].get("planned_steps")
        self.class_names = list(checkpoint["mobilenet_lab"].get("class_names") or [])
        rng = checkpoint.get("rng", {})
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        state = this_rank_state(rng.get("torch"), rank, world)
        if state is not None:
            torch.set_rng_state(state)
        state = this_rank_state(rng.get("cuda"), rank, world)
        if state is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state)  # this rank's device (restored before the model moves there)
