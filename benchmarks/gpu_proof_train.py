"""One training of the GPU proof in its own process, and the record it leaves behind.

The parts of ``gpu_proof.py`` start trainings with :func:`run_training`, which runs this file:

    python benchmarks/gpu_proof_train.py --record run.jsonl --label LABEL [--test] [--weights FILE] -- <fit arguments>

The child runs ``fit`` as the CLI builds it and appends JSON lines to ``--record``: one per validation
(epoch, step, val/acc, seconds since the fit began) and one per training epoch, then a summary (fit time,
training images/s, start-up marks, and with ``--test`` the test accuracy of the final weights). With
``--weights`` it writes the final weights as a weights-only checkpoint, cut into pieces of at most
:data:`PIECE_BYTES` when larger (a lent machine returns files of at most 16 MiB; ``cat FILE.part* > FILE``
joins them). :func:`read_record` reads the lines back. The fit arguments every part shares (the short
recipe, the device) are defined here too.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilenet_lab.tools.timing import clock  # noqa: E402

RECIPE = "configs/recipes/short.yaml"
#: The largest file a weights checkpoint is written as; larger ones are cut into FILE.part1, FILE.part2, ...
PIECE_BYTES = 15 * 2**20


def device_args(dry: bool) -> list[str]:
    """The fit arguments of the device: the GPU preset, or one CPU for a dry run."""
    return (
        ["--trainer.accelerator=cpu", "--trainer.devices=1"]
        if dry
        else ["--config", str(ROOT / "configs/trainer/gpu.yaml")]
    )


# ----------------------------------------------------------------------------------- the parent
def run_training(
    work: Path,
    label: str,
    fit_args: list[str],
    timeout: float,
    test: bool = True,
    wait: bool = True,
    late: list[str] | None = None,
    weights: Path | None = None,
) -> Any:
    """Starts this file in its own process (returns the run's result dict, or with ``wait=False`` the Popen).

    ``late`` arguments come after the fixed ones (``--trainer.callbacks=[]`` above all), e.g. a callback recipe;
    ``weights``: where the final weights go (see the module's docstring).
    """
    slug = "".join(c if c.isalnum() else "_" for c in label).strip("_")
    record = work / "runs" / f"{slug}.jsonl"
    record.parent.mkdir(parents=True, exist_ok=True)
    child = [sys.executable, str(Path(__file__).resolve()), "--record", str(record), "--label", label]
    logs = [f"--trainer.logger.init_args.save_dir={work / 'logs'}", f"--trainer.logger.init_args.name={slug}"]
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.callbacks=[]", "--trainer.enable_model_summary=false"]
    command = [
        *child,
        *(["--test"] if test else []),
        *(["--weights", str(weights)] if weights is not None else []),
        "--",
        *fit_args,
        *logs,
        f"--checkpoint.root={work / 'checkpoints'}",
        *quiet,
        *(late or []),
    ]
    log = open(work / "runs" / f"{slug}.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()  # one clock for all processes of the machine: the child's ended_at ends the span
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    proc.record, proc.label, proc.log, proc.started = record, label, log, started  # type: ignore[attr-defined]
    if not wait:
        return proc
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    return read_record(record)


def read_record(record: Path) -> dict[str, Any]:
    """The run's last summary merged over its per-epoch lines (``epochs``: list of val/acc, ``epoch_t``: times)."""
    result: dict[str, Any] = {"epochs": [], "epoch_t": []}
    if record.is_file():
        for line in record.read_text().splitlines():
            entry = json.loads(line)
            if "epoch" in entry:
                result["epochs"].append(entry["val_acc"])
                result["epoch_t"].append(entry["t"])
            elif "train_epoch" in entry:  # epochs trained so far (a run stopped at a deadline says how far)
                result["train_epochs"] = entry["train_epoch"]
            else:
                result.update(entry)
    return result


# ------------------------------------------------------------------------------------ the child
def train(record: Path, label: str, fit_args: list[str], test: bool, weights: Path | None = None) -> None:
    """``fit`` with the given arguments, a record line per validation and per epoch, then the final weights
    written to ``weights`` (if given) and scored by ``test`` (if asked)."""
    import lightning as L

    from mobilenet_lab.cli import MobileNetCLI

    def write(entry: dict[str, Any]) -> None:
        with open(record, "a") as f:
            f.write(json.dumps({"label": label, **entry}) + "\n")

    marks: dict[str, float] = {}

    class Record(L.Callback):
        # Where a process's first epoch goes (start-up): seconds from the fit's start to these points.
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            marks.setdefault("train_start_s", round(clock() - start, 2))

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            if trainer.global_step in (1, 11):
                if torch.cuda.is_available():  # the step's kernels have run (two syncs in a whole run)
                    torch.cuda.synchronize()
                marks.setdefault(f"step{trainer.global_step}_s", round(clock() - start, 2))

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
                val_acc = float(trainer.callback_metrics["val/acc"])
                seconds = round(clock() - start, 1)
                write({"epoch": trainer.current_epoch, "step": trainer.global_step, "val_acc": val_acc, "t": seconds})

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            write({"train_epoch": trainer.current_epoch + 1, "t": round(clock() - start, 1)})

    process_start = clock()
    cli = MobileNetCLI(args=fit_args, run=False)
    marks["cli_s"] = round(clock() - process_start, 2)
    cli.trainer.callbacks.append(Record())
    start = clock()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = clock() - start
    data = cli.datamodule
    images = len(data.train_dataset) // data.batch_size * data.batch_size * cli.trainer.current_epoch
    summary = {
        "fit_s": round(fit_s, 1),
        "train_images": len(data.train_dataset),
        "batch": data.batch_size,
        "train_img_s": round(images / fit_s),
        "process_s": round(clock() - process_start, 1),
        "epochs_trained": cli.trainer.current_epoch,
        "compile": str(cli.model.hparams.get("compile", False)).lower(),
        **marks,
    }
    if weights is not None:
        summary.update(save_weights(cli.trainer, weights))
    if test:  # the final weights, in memory (whatever the checkpoints hold)
        metrics = cli.trainer.test(cli.model, datamodule=data, verbose=False)[0]
        summary.update(test_acc=metrics["test/acc"], test_acc_top5=metrics["test/acc_top5"])
    summary["ended_at"] = time.monotonic()  # the parent's wall time of the whole process: ended_at - its start
    write(summary)


def save_weights(trainer: Any, path: Path) -> dict[str, Any]:
    """The final weights as a weights-only checkpoint at ``path`` (``load_model``, ``distill.teacher`` read it),
    cut into ``path.part1``... when over :data:`PIECE_BYTES`; returns what the record says about it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path, weights_only=True)
    data = path.read_bytes()
    files = [path]
    if len(data) > PIECE_BYTES:
        files = [path.with_name(f"{path.name}.part{i // PIECE_BYTES + 1}") for i in range(0, len(data), PIECE_BYTES)]
        for i, piece in enumerate(files):
            piece.write_bytes(data[i * PIECE_BYTES : (i + 1) * PIECE_BYTES])
        path.unlink()
    where = " + ".join(str(f) for f in files)
    join = f" (join: cat {path}.part* > {path})" if len(files) > 1 else ""
    print(f"final weights: {where}{join}", flush=True)
    return {"weights": [f.name for f in files], "weights_sha256": hashlib.sha256(data).hexdigest()}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--")
    own, fit_args = argv[:split], argv[split + 1 :]
    weights = Path(own[own.index("--weights") + 1]) if "--weights" in own else None
    train(Path(own[own.index("--record") + 1]), own[own.index("--label") + 1], fit_args, "--test" in own, weights)


if __name__ == "__main__":
    main()
