"""What ``test`` and ``predict`` show: TensorBoard panels after a test, ``predictions.csv`` after predict."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback

from .confusion import (
    CONFUSION_CSV,
    confusion_figure,
    confusion_markdown,
    most_confused,
    worst_classes,
    write_confusion_csv,
)
from .data.normalize import denormalize
from .run_layout import run_folder

__all__ = ["TestPanels", "PredictionWriter", "prediction_grid"]


class TestPanels(Callback):
    """After ``test``: what the model gets wrong, readable at a glance.

    In TensorBoard: a grid of sample predictions (green correct; red wrong, with the true class
    under the image), the confusion matrix, and as text the most-confused class pairs and the
    worst classes by name. The matrix is also written as ``confusion_matrix.csv`` into the run's
    folder, where ``report`` reads it.
    """

    #: How many confused pairs and worst classes the text panels list.
    top_k = 10

    def __init__(self, num_images: int = 64) -> None:
        self.num_images = num_images
        self._images: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._preds: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images, self._targets, self._preds = [], [], []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        have = sum(len(t) for t in self._targets)
        if have >= self.num_images or outputs is None:
            return
        take = self.num_images - have
        self._images.append(batch[0][:take].detach().float().cpu())
        self._targets.append(batch[1][:take].detach().cpu())
        self._preds.append(outputs[:take].argmax(1).detach().cpu())

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is None or not trainer.is_global_zero or not self._images:
            return
        names = list(getattr(trainer.datamodule, "class_names", None) or [])
        mean = getattr(trainer.datamodule, "mean", (0.0, 0.0, 0.0))
        std = getattr(trainer.datamodule, "std", (1.0, 1.0, 1.0))
        images = denormalize(torch.cat(self._images), mean, std).clamp(0, 1)
        step = trainer.global_step
        writer.add_figure(
            "test/predictions", prediction_grid(images, torch.cat(self._targets), torch.cat(self._preds), names), step
        )
        confusion = pl_module.test_confusion.compute().cpu()
        writer.add_figure("test/confusion_matrix", confusion_figure(confusion), step)
        pairs = most_confused(confusion, names, self.top_k)
        writer.add_text(
            "test/most_confused",
            confusion_markdown(pairs, ("true class", "predicted as", "images", "share of class")),
            step,
        )
        writer.add_text(
            "test/worst_classes",
            confusion_markdown(worst_classes(confusion, names, self.top_k), ("class", "accuracy", "images")),
            step,
        )
        write_confusion_csv(confusion, names, Path(run_folder(trainer)) / CONFUSION_CSV)


def _tensorboard(trainer: L.Trainer) -> Any:
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def prediction_grid(images: torch.Tensor, targets: torch.Tensor, preds: torch.Tensor, names: list[str]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def name(index: int) -> str:
        return names[index] if index < len(names) else str(index)

    cols = 8
    rows = (len(images) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 2.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, target, pred in zip(axes.flat, images, targets.tolist(), preds.tolist()):
        ax.imshow(image.permute(1, 2, 0).numpy())
        ax.set_title(name(pred), fontsize=7, color="green" if pred == target else "red")
        if pred != target:  # a miss also says what the image was
            ax.text(
                0.5,
                -0.04,
                f"true: {name(target)}",
                transform=ax.transAxes,
                ha="center",
                va="top",
                fontsize=6,
                color="black",
            )
    fig.tight_layout()
    return fig


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (file, then top-k class names and probabilities) into the run folder.

    Rows are written batch by batch, so memory does not grow with the number of images (the
    command line also runs ``predict`` with ``return_predictions=False``).
    """

    def __init__(self, top_k: int = 5, filename: str = "predictions.csv") -> None:
        super().__init__(write_interval="batch")
        self.top_k = top_k
        self.filename = filename
        self.path: Path | None = None
        self._file: Any = None
        self._writer: Any = None
        self._names: list[str] = []
        self._k = top_k

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._names = pl_module.class_names or list(getattr(trainer.datamodule, "class_names", None) or [])
        folder = Path(run_folder(trainer))
        folder.mkdir(parents=True, exist_ok=True)
        rank = "" if trainer.world_size == 1 else f".rank{trainer.global_rank}"
        self.path = folder / (Path(self.filename).stem + rank + Path(self.filename).suffix)
        self._k = min(self.top_k, pl_module.hparams.num_classes)
        self._file = open(self.path, "w", newline="")
        self._writer = csv.writer(self._file)
        self._writer.writerow(["file"] + [f"{kind}{i + 1}" for i in range(self._k) for kind in ("class", "prob")])

    def write_on_batch_end(
        self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx
    ) -> None:
        names = self._names
        probs, idx = prediction["probs"].topk(self._k, dim=1)
        for name, p_row, i_row in zip(prediction["names"], probs.tolist(), idx.tolist()):
            row: list[Any] = [name]
            for p, i in zip(p_row, i_row):
                row += [names[i] if i < len(names) else str(i), f"{p:.6f}"]
            self._writer.writerow(row)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._close()
        print(f"wrote {self.path}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
