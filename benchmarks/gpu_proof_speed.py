"""The GPU proof's speed parts (``gpu_proof.py --parts [throughput,timed_fit]``), on random images.

- :func:`throughput`: training images/s through ``fit`` against a bare compiled loop over torchvision's same
  network, interleaved (fit, bare, fit, bare), per version; writes ``throughput.csv``.
- :func:`timed_fit`: the wall time of a whole 20-epoch fit of V3-Large 1.0 with validation, and where its
  start-up goes; adds a row to ``timed_fit.csv``.

Both train on random images in the official archive format (:func:`write_random_archive`): the speed does
not depend on the pixels, so they need no data set.
"""

from __future__ import annotations

import csv
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_proof_train import RECIPE, device_args, run_training  # noqa: E402

from mobilenet_lab.tools.benchmark.loops import (  # noqa: E402
    bare_images_per_second,
    bare_model,
    fit_images_per_second,
    random_batches,
    train_step,
)
from mobilenet_lab.tools.tables import write_csv  # noqa: E402
from mobilenet_lab.tools.timing import median  # noqa: E402

#: (label, config file) of the throughput part; the bare loop trains the network the fit built.
VERSIONS = [("V3-Large", "v3_large"), ("V3-Small", "v3_small"), ("V2", "v2"), ("V1", "v1")]


def write_random_archive(folder: Path, train: int, test: int, seed: int = 0) -> Path:
    """Random uint8 images in the official ``cifar-100-python`` layout (speed tests need no real pixels)."""
    rng = np.random.default_rng(seed)
    split_dir = folder / "cifar-100-python"
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": rng.integers(0, 100, n).tolist(),
        }
        with open(split_dir / name, "wb") as f:
            pickle.dump(entry, f, protocol=4)
    with open(split_dir / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)]}, f, protocol=4)
    return folder


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


# ------------------------------------------------------------------------------------ throughput
def fit_rate(
    config: str,
    data_dir: Path,
    work: Path,
    batch: int,
    steps: int,
    skip: int,
    compile: bool | str,
    dry: bool,
    extra: list[str] | None = None,
    compile_cache: Path | None = None,
) -> tuple[float, float, Any]:
    """(images/s, seconds to the end of the first step, the module) of one ``fit`` of ``config`` + the recipe.

    ``compile``: false, true or a mode; ``extra``: fit arguments laid over the configs and under the part's own
    settings (batch, steps, no validation, compile), e.g. ``--config=<recipe>`` for the full-length recipe's
    fused SGD; ``compile_cache``: a folder holding one compile cache file per version config
    (``<config>.bin``), read before and written after a compiled fit.
    """
    configs = ["--config", str(ROOT / "configs" / f"{config}.yaml"), "--config", str(ROOT / RECIPE)]
    data = [f"--data.data_dir={data_dir}", f"--data.batch_size={batch}", "--data.val_size=0"]
    steps_only = [
        f"--trainer.max_steps={skip + steps}",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_model_summary=false",
    ]
    outputs = [
        f"--trainer.logger.init_args.save_dir={work / 'logs'}",
        "--trainer.logger.init_args.name=throughput",
        f"--checkpoint.root={work / 'checkpoints'}",
    ]
    compiled = [f"--model.init_args.compile={str(compile).lower()}"]
    if compile_cache is not None:  # read and written only when compiled
        compiled.append(f"--model.init_args.compile_cache={compile_cache / f'{config}.bin'}")
    args = [*configs, *device_args(dry), *(extra or []), *data, *steps_only, *compiled, *outputs]
    return fit_images_per_second(args, steps, skip)


def bare_rate(description: Any, batch: int, steps: int, skip: int, compile: bool) -> tuple[float, float]:
    """The same numbers for the bare loop over torchvision's network of ``description`` (ours where it has none)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = bare_model(description).to(device, memory_format=torch.channels_last).train()
    batches = random_batches(4, batch, 32, description.num_classes, device)
    step = train_step(model, batches, bf16=device.type == "cuda", compile=compile)
    return bare_images_per_second(step, batch, steps, skip)


def throughput(
    out: Path,
    work: Path,
    dry: bool,
    deadline: float,
    models: list[str],
    fit_compile: bool | str,
    fit_args: list[str] | None = None,
    rounds: int = 2,
    compile_cache: Path | None = None,
) -> None:
    """fit (eager: the presets' default) against a bare compiled loop, interleaved ``rounds`` times; with
    ``fit_compile`` (true or a mode) one compiled fit too. ``fit_args`` go to every fit (``fit_rate``)."""
    batch, steps, skip = (4, 2, 1) if dry else (512, 60, 15)
    rounds = 1 if dry else rounds
    data_dir = write_random_archive(work / "random", *((32, 8) if dry else (50_000, 1_000)))
    rows = []
    for label, config in VERSIONS:
        if label not in models:
            continue
        if time.monotonic() > deadline:
            print(f"throughput: {label} skipped (deadline)", flush=True)
            continue
        fits, bares, fit_first, bare_first = [], [], [], []
        for _ in range(rounds):  # interleaved: fit, bare, fit, bare
            rate, first, module = fit_rate(config, data_dir, work, batch, steps, skip, False, dry, fit_args)
            fits.append(rate), fit_first.append(first)
            rate, first = bare_rate(module.model.description, batch, steps, skip, not dry)
            bares.append(rate), bare_first.append(first)
        ratios = [f / b for f, b in zip(fits, bares)]
        row = {
            "model": label,
            "batch": batch,
            "fit_img_s": round(median(fits)),
            "bare_compiled_img_s": round(median(bares)),
            "ratio": round(median(ratios), 3),
            "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}",
            "fit_first_step_s": round(fit_first[0], 1),
            "bare_compile_s": round(bare_first[0], 1),
            "fit_compiled_img_s": None,
            "fit_compile_s": None,
            "fit_compile_mode": None,
            "fit_args": " ".join(fit_args or []),
            "device": device_name(),
            "torch": torch.__version__,
        }
        if fit_compile is not False:
            mode = "default" if fit_compile is True else fit_compile
            # A dry run stays eager (compiling V3 takes minutes on a CPU); the same arguments reach the fit.
            compile = False if dry else mode
            rate, first, _ = fit_rate(config, data_dir, work, batch, steps, skip, compile, dry, fit_args, compile_cache)
            row.update(
                fit_compiled_img_s=round(rate), fit_compile_s=round(first, 1), fit_compile_mode=str(compile).lower()
            )
        rows.append(row)
        print(f"throughput: {row}", flush=True)
        write_csv(rows, out / "throughput.csv", list(row))


# ------------------------------------------------------------------------------------- timed fit
def timed_fit(out: Path, work: Path, dry: bool, extra_args: list[str] | None = None) -> None:
    """Wall time of a whole 20-epoch fit of V3-Large 1.0 (4x4 stem) with validation, random images."""
    data_dir = write_random_archive(work / "random_fit", *((48, 8) if dry else (50_000, 1_000)))
    epochs = 1 if dry else 20
    extra = ["--data.batch_size=8", "--model.init_args.width_mult=0.25"] if dry else []
    configs = ["--config", str(ROOT / "configs/v3_large.yaml"), "--config", str(ROOT / RECIPE)]
    data = [f"--data.data_dir={data_dir}", "--data.val_size=5000" if not dry else "--data.val_size=32"]
    fit_args = [*configs, *device_args(dry), *data, f"--trainer.max_epochs={epochs}", *extra, *(extra_args or [])]
    result = run_training(work, "timed_fit", fit_args, timeout=600, test=False)
    row = {
        "run": "V3-Large 1.0, 4x4 stem, 20 epochs, 45k train + 5k val each epoch",
        "fit_s": result.get("fit_s"),
        "process_s": result.get("process_s"),
        "train_img_s": result.get("train_img_s"),
        "batch": result.get("batch"),
        "first_epoch_s": result["epoch_t"][0] if result["epoch_t"] else None,
        # start-up, from the fit's start: trainer set up (data on the device), first step, eleventh step
        **{k: result.get(k) for k in ("cli_s", "train_start_s", "step1_s", "step11_s")},
        "args": " ".join(extra_args or []),
        "device": device_name(),
        "torch": torch.__version__,
    }
    print(f"timed_fit: {row}", flush=True)
    earlier = list(csv.DictReader(open(out / "timed_fit.csv"))) if (out / "timed_fit.csv").is_file() else []
    write_csv([*earlier, row], out / "timed_fit.csv", list(row))
