"""The GPU proof in one command: training speed through ``fit`` against a bare compiled loop, and the
replaced implementation's 20-epoch table, written to one output folder.

    python benchmarks/gpu_proof.py --data_dir <folder holding cifar-100-python> --out gpu_proof
    python benchmarks/gpu_proof.py --dry-run --out /tmp/proof        # the same code on the CPU, tiny sizes

Parts (``--parts``, all by default), so the proof can be spread over short calls to a lent machine:

- ``throughput``: training images/s of V1, V2, V3-Small and V3-Large (width 1.0, CIFAR stem) through
  ``fit`` (the CLI's trainer, data module with the images on the GPU, metrics, logging; bf16-mixed,
  channels_last) against a bare loop over torchvision's same network (our plain network for V1, which
  torchvision lacks) on random batches already on the GPU, compiled; interleaved (fit, bare, fit, bare),
  median ratio. ``fit`` runs eager as the presets do (a compiled fit was slower on an H200, see
  BENCHMARKS.md); ``--fit_compile true`` times one compiled fit too. Random images in the official
  archive format, so it needs no data set.
- ``timed_fit``: a whole ``fit`` of V3-Large 1.0 (4x4 stem), 20 epochs on 45,000 random images with
  validation on 5,000, wall time (the speed does not depend on the pixels).
- ``table``: the six rows of the replaced implementation (V3-Small/V3-Large x 0.25/0.5/1.0, 20
  epochs, ``downsamples_removed: 3``) with ``configs/recipes/short.yaml``, trained on all 50,000 images
  as it did and scored on the test set (final epoch, and best epoch labelled as such), plus the recipe
  comparisons on V3-Small 0.25; several trainings at once on the one GPU (``--parallel``), each once per
  seed of ``--seeds`` (``proof.md`` then gives the mean per training).

Writes ``proof.md`` (all tables, rendered from whatever CSVs the folder holds), ``throughput.csv``,
``timed_fit.csv``, ``table.csv``, ``runs.jsonl`` (per-epoch records) and ``logs.tar.gz`` (TensorBoard
logs and each training's output). ``--render`` only re-renders ``proof.md`` from the CSVs in ``--out``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mobilenet_lab.tools.tables import markdown_table, output_dir, write_csv  # noqa: E402
from mobilenet_lab.tools.benchmark.loops import (  # noqa: E402
    bare_images_per_second, bare_model, fit_images_per_second, random_batches, train_step)
from mobilenet_lab.tools.timing import clock, median  # noqa: E402

#: (label, config file) of the throughput part; the bare loop trains the network the fit built.
VERSIONS = [("V3-Large", "v3_large"), ("V3-Small", "v3_small"), ("V2", "v2"), ("V1", "v1")]
#: The replaced implementation's 20-epoch test top-1 (8x8 final map; best epoch, scored on the test set).
REPLACED = [("V3-Small", "v3_small", 0.25, 60.13), ("V3-Small", "v3_small", 0.5, 66.37),
            ("V3-Small", "v3_small", 1.0, 69.44), ("V3-Large", "v3_large", 0.25, 65.03),
            ("V3-Large", "v3_large", 0.5, 69.50), ("V3-Large", "v3_large", 1.0, 71.75)]
RECIPE = "configs/recipes/short.yaml"
#: Recipe comparisons on V3-Small 0.25 (8x8): label -> fit arguments replacing or added to the recipe's.
#: ``--no_recipe`` drops the short recipe; ``--config=...`` entries are applied last (after the table's
#: ``--trainer.callbacks=[]``), so a callback recipe such as the EMA one survives.
#: The first two are the dry run's: a late callback recipe and a --data override.
VARIANTS: dict[str, list[str]] = {
    "short, EMA of the weights": [f"--config={ROOT / 'configs/recipes/ema.yaml'}"],
    "short, batch 512 (gpu preset)": ["--data.batch_size=512"],
    "short, batch 64": ["--data.batch_size=64"],
    "shipped 200-epoch recipe": ["--no_recipe"],
    "short, lr 0.2 per 128 (the recipe until 2026-11-26)": ["--model.init_args.optimizer.init_args.lr=0.2"],
    "short, weight decay 1e-4": ["--model.init_args.optimizer.init_args.weight_decay=1e-4"],
    "short, 45k train / 5k val (our protocol)": ["--data.val_size=5000"],
}


# ------------------------------------------------------------------------------------------ data
def write_random_archive(folder: Path, train: int, test: int, seed: int = 0) -> Path:
    """Random uint8 images in the official ``cifar-100-python`` layout (speed tests need no real pixels)."""
    import pickle

    rng = np.random.default_rng(seed)
    split_dir = folder / "cifar-100-python"
    split_dir.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", train), ("test", test)):
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, n).tolist()}
        with open(split_dir / name, "wb") as f:
            pickle.dump(entry, f, protocol=4)
    with open(split_dir / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)]}, f, protocol=4)
    return folder


def device_args(dry: bool) -> list[str]:
    return ["--trainer.accelerator=cpu", "--trainer.devices=1"] if dry else ["--config", str(ROOT / "configs/trainer/gpu.yaml")]


# ------------------------------------------------------------------------------------ throughput
def fit_rate(config: str, data_dir: Path, work: Path, batch: int, steps: int, skip: int, compile: bool,
             dry: bool) -> tuple[float, float, Any]:
    """(images/s, seconds to the end of the first step, the module) of one ``fit`` of ``config`` + the recipe."""
    args = ["--config", str(ROOT / "configs" / f"{config}.yaml"), "--config", str(ROOT / RECIPE),
            *device_args(dry), f"--data.data_dir={data_dir}", f"--data.batch_size={batch}", "--data.val_size=0",
            f"--trainer.max_steps={skip + steps}", "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_model_summary=false", f"--model.init_args.compile={str(compile).lower()}",
            f"--trainer.logger.init_args.save_dir={work / 'logs'}", "--trainer.logger.init_args.name=throughput",
            f"--checkpoint.root={work / 'checkpoints'}"]
    return fit_images_per_second(args, steps, skip)


def bare_rate(description: Any, batch: int, steps: int, skip: int, compile: bool) -> tuple[float, float]:
    """The same numbers for the bare loop over torchvision's network of ``description`` (ours where it has none)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = bare_model(description).to(device, memory_format=torch.channels_last).train()
    step = train_step(model, random_batches(4, batch, 32, description.num_classes, device),
                      bf16=device.type == "cuda", compile=compile)
    return bare_images_per_second(step, batch, steps, skip)


def throughput(out: Path, work: Path, dry: bool, deadline: float, models: list[str], fit_compile: bool) -> None:
    """fit (eager: the presets' default) against a bare compiled loop, interleaved; optionally a compiled fit."""
    batch, steps, skip, rounds = (4, 2, 1, 1) if dry else (512, 60, 15, 2)
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
            rate, first, module = fit_rate(config, data_dir, work, batch, steps, skip, False, dry)
            fits.append(rate), fit_first.append(first)
            rate, first = bare_rate(module.model.description, batch, steps, skip, not dry)
            bares.append(rate), bare_first.append(first)
        ratios = [f / b for f, b in zip(fits, bares)]
        row = {
            "model": label, "batch": batch, "fit_img_s": round(median(fits)),
            "bare_compiled_img_s": round(median(bares)), "ratio": round(median(ratios), 3),
            "ratio_range": f"{min(ratios):.2f}-{max(ratios):.2f}", "fit_first_step_s": round(fit_first[0], 1),
            "bare_compile_s": round(bare_first[0], 1), "fit_compiled_img_s": None, "fit_compile_s": None,
            "device": device_name(), "torch": torch.__version__,
        }
        if fit_compile:
            rate, first, _ = fit_rate(config, data_dir, work, batch, steps, skip, not dry, dry)
            row.update(fit_compiled_img_s=round(rate), fit_compile_s=round(first, 1))
        rows.append(row)
        print(f"throughput: {row}", flush=True)
        write_csv(rows, out / "throughput.csv", list(row))


def timed_fit(out: Path, work: Path, dry: bool, extra_args: list[str] | None = None) -> None:
    """Wall time of a whole 20-epoch fit of V3-Large 1.0 (4x4 stem) with validation, random images."""
    data_dir = write_random_archive(work / "random_fit", *((48, 8) if dry else (50_000, 1_000)))
    epochs = 1 if dry else 20
    extra = ["--data.batch_size=8", "--model.init_args.width_mult=0.25"] if dry else []
    result = run_training(work, "timed_fit", ["--config", str(ROOT / "configs/v3_large.yaml"), "--config",
                          str(ROOT / RECIPE), *device_args(dry), f"--data.data_dir={data_dir}", "--data.val_size=5000"
                          if not dry else "--data.val_size=32", f"--trainer.max_epochs={epochs}", *extra, *(extra_args or [])],
                          timeout=600, test=False)
    row = {"run": "V3-Large 1.0, 4x4 stem, 20 epochs, 45k train + 5k val each epoch",
           "fit_s": result.get("fit_s"), "process_s": result.get("process_s"), "train_img_s": result.get("train_img_s"),
           "batch": result.get("batch"),
           "first_epoch_s": result["epoch_t"][0] if result["epoch_t"] else None,
           # start-up, from the fit's start: trainer set up (data on the device), first step, eleventh step
           **{k: result.get(k) for k in ("cli_s", "train_start_s", "step1_s", "step11_s")},
           "args": " ".join(extra_args or []), "device": device_name(), "torch": torch.__version__}
    print(f"timed_fit: {row}", flush=True)
    earlier = list(csv.DictReader(open(out / "timed_fit.csv"))) if (out / "timed_fit.csv").is_file() else []
    write_csv([*earlier, row], out / "timed_fit.csv", list(row))


# ----------------------------------------------------------------------------------------- table
def run_training(work: Path, label: str, fit_args: list[str], timeout: float, test: bool = True,
                 wait: bool = True, late: list[str] | None = None) -> Any:
    """Starts ``gpu_proof.py --train`` in its own process (returns its result dict, or the Popen).

    ``late`` arguments come after the fixed ones (``--trainer.callbacks=[]`` above all), e.g. a callback recipe.
    """
    slug = "".join(c if c.isalnum() else "_" for c in label).strip("_")
    record = work / "runs" / f"{slug}.jsonl"
    record.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--train", "--record", str(record), "--label", label,
               *(["--test"] if test else []), "--", *fit_args,
               f"--trainer.logger.init_args.save_dir={work / 'logs'}", f"--trainer.logger.init_args.name={slug}",
               f"--checkpoint.root={work / 'checkpoints'}", "--trainer.enable_progress_bar=false",
               "--trainer.callbacks=[]", "--trainer.enable_model_summary=false", *(late or [])]
    log = open(work / "runs" / f"{slug}.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    proc.record, proc.label, proc.log = record, label, log  # type: ignore[attr-defined]
    if not wait:
        return proc
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
    return read_record(record)


def read_record(record: Path) -> dict[str, Any]:
    """The run's last summary merged over its per-epoch lines (``epochs``: list of val/acc)."""
    result: dict[str, Any] = {"epochs": [], "epoch_t": []}
    if record.is_file():
        for line in record.read_text().splitlines():
            entry = json.loads(line)
            if "epoch" in entry:
                result["epochs"].append(entry["val_acc"])
                result["epoch_t"].append(entry["t"])
            else:
                result.update(entry)
    return result


def table(out: Path, work: Path, data_dir: Path, dry: bool, deadline: float, compile_runs: list[str],
          parallel: int, only: list[str] | None = None, batch: int = 128, extra_args: list[str] | None = None,
          seeds: list[int] | None = None) -> None:
    runs: list[tuple[str, list[str], dict[str, Any]]] = []
    epochs = 1 if dry else 20
    for version, config, width, replaced in REPLACED if not dry else REPLACED[:1]:
        runs.append((f"{version} {width:g}", [f"--config={ROOT / 'configs' / f'{config}.yaml'}", f"--config={ROOT / RECIPE}",
                     f"--model.init_args.width_mult={width}"],
                     {"model": version, "width": width, "recipe": "short", "replaced": replaced}))
    for label, extra in VARIANTS.items() if not dry else list(VARIANTS.items())[:2]:
        base = [f"--config={ROOT / 'configs/v3_small.yaml'}"]
        if "--no_recipe" not in extra:
            base.append(f"--config={ROOT / RECIPE}")
        runs.append((f"V3-Small 0.25, {label}", base + ["--model.init_args.width_mult=0.25"]
                     + [a for a in extra if a != "--no_recipe" and not a.startswith("--config=")],
                     {"model": "V3-Small", "width": 0.25, "recipe": label, "replaced": 60.13,
                      "late": [a for a in extra if a.startswith("--config=")]}))
    # Evaluation batches of 1000 divide both 10,000 and 5,000: one shape, no recompiles when compiled.
    common = [*device_args(dry), f"--data.data_dir={data_dir}", "--data.val_size=0", "--data.eval_batch_size=1000",
              "--model.init_args.downsamples_removed=3", f"--trainer.max_epochs={epochs}",
              f"--data.batch_size={16 if dry else batch}", *(extra_args or [])]
    if dry:
        common += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                   "--trainer.limit_test_batches=1"]
    if only is not None:
        unknown = set(only) - {label for label, _, _ in runs}
        if unknown:
            raise SystemExit(f"error: --runs: unknown {sorted(unknown)}; the trainings are {[r[0] for r in runs]}")
        runs = [r for r in runs if r[0] in only]
    # Each training once per seed (seed 0 keeps the plain label): two seeds of one recipe ended a point
    # apart on an H100, so candidates are compared by their means.
    runs = [(label if seed == 0 else f"{label}, seed {seed}", [*args, f"--seed_everything={seed}"],
             {**meta, "base": label, "seed": seed}) for label, args, meta in runs for seed in (seeds or [0])]
    procs, waiting = [], []
    for label, args, meta in runs:
        # Order matters: the run's own arguments (configs, then overrides) come before the common ones,
        # except --data.val_size/batch_size overrides of a variant, which must win: put them last, and a
        # variant's callback recipe (--config=...) after the fixed `--trainer.callbacks=[]`.
        overrides = [a for a in args if a.startswith("--data.")]
        fit_args = [a for a in args if not a.startswith("--data.")] + common + overrides
        if label in compile_runs:
            fit_args.append("--model.init_args.compile=true")
        waiting.append((label, fit_args, meta))
    # At most `parallel` trainings share the GPU at once (time-sliced between processes: 14 at once
    # on an H200 ran each V3-Small 0.25 at ~18 s per epoch, see FINDINGS.md); the rest wait their turn.
    while (waiting or any(p.poll() is None for p, _ in procs)) and time.monotonic() < deadline:
        while waiting and sum(p.poll() is None for p, _ in procs) < parallel:
            label, fit_args, meta = waiting.pop(0)
            procs.append((run_training(work, label, fit_args, timeout=0, wait=False, late=meta.get("late")), meta))
        time.sleep(1)
    for label, _, meta in waiting:  # never started: reported as such
        print(f"table: {label} not started (deadline)", flush=True)
    rows = []
    for proc, meta in procs:
        stopped = proc.poll() is None
        if stopped:
            proc.kill()
        proc.wait()
        proc.log.close()
        if not stopped and proc.returncode != 0:  # a failed training says why, here and not only in logs.tar.gz
            tail = Path(proc.log.name).read_text(errors="replace").splitlines()[-15:]
            print(f"table: {proc.label} failed (exit {proc.returncode}):", *tail, sep="\n  ", flush=True)
        r = read_record(proc.record)
        final = r.get("test_acc")
        rows.append({
            "run": proc.label, "base": meta["base"], "seed": meta["seed"], "model": meta["model"],
            "width": meta["width"], "recipe": meta["recipe"],
            "train_images": r.get("train_images"), "epochs_done": len(r["epochs"]),
            "test_top1_final": None if final is None else round(100 * final, 2),
            "test_top5_final": None if r.get("test_acc_top5") is None else round(100 * r["test_acc_top5"], 2),
            "val_top1_best_epoch": round(100 * max(r["epochs"]), 2) if r["epochs"] else None,
            "replaced": meta["replaced"],
            "gain": None if final is None else round(100 * final - meta["replaced"], 2),
            "fit_s": r.get("fit_s"), "batch": r.get("batch"), "exit": proc.returncode,
            "curve": " ".join(f"{100 * v:.1f}" for v in r["epochs"]),
        })
    write_csv(rows, out / "table.csv", list(rows[0]))
    with open(out / "runs.jsonl", "w") as f:
        for proc, _ in procs:
            if proc.record.is_file():
                f.write(proc.record.read_text())


# ----------------------------------------------------------------------------- one training run
def train(record: Path, label: str, fit_args: list[str], test: bool) -> None:
    """``fit`` with the given arguments, a record line per validation, then ``test`` of the final weights."""
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
                write({"epoch": trainer.current_epoch, "step": trainer.global_step,
                       "val_acc": float(trainer.callback_metrics["val/acc"]), "t": round(clock() - start, 1)})

    process_start = clock()
    cli = MobileNetCLI(args=fit_args, run=False)
    marks["cli_s"] = round(clock() - process_start, 2)
    cli.trainer.callbacks.append(Record())
    start = clock()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = clock() - start
    data = cli.datamodule
    images = len(data.train_dataset) // data.batch_size * data.batch_size * cli.trainer.current_epoch
    summary = {"fit_s": round(fit_s, 1), "train_images": len(data.train_dataset), "batch": data.batch_size,
               "train_img_s": round(images / fit_s), "process_s": round(clock() - process_start, 1), **marks}
    if test:  # the final weights, in memory (whatever the checkpoints hold)
        metrics = cli.trainer.test(cli.model, datamodule=data, verbose=False)[0]
        summary.update(test_acc=metrics["test/acc"], test_acc_top5=metrics["test/acc_top5"])
    write(summary)


# ---------------------------------------------------------------------------------------- render
def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def render(out: Path) -> str:
    def read(name: str) -> list[dict[str, str]]:
        path = out / name
        return list(csv.DictReader(open(path))) if path.is_file() else []

    parts = ["# GPU proof\n"]
    rows = read("throughput.csv")
    if rows:
        parts.append(f"## Training images/s through fit vs a bare compiled loop ({rows[0]['device']}, torch "
                     f"{rows[0]['torch']}, batch {rows[0]['batch']}, bf16-mixed, channels_last, 4x4 stem; fit eager "
                     "as the presets run it unless fit_compiled)\n")
        parts.append(markdown_table([{k: v for k, v in r.items() if k not in ("device", "torch", "batch")} for r in rows]))
    rows = read("timed_fit.csv")
    if rows:
        parts.append("\n## A whole fit, timed\n")
        parts.append(markdown_table(rows))
    rows = read("table.csv")
    if rows:
        parts.append("\n## The replaced implementation's 20-epoch table (8x8 final map, test set)\n")
        keep = ("run", "train_images", "epochs_done", "test_top1_final", "val_top1_best_epoch", "replaced", "gain",
                "test_top5_final", "fit_s", "batch")
        parts.append(markdown_table([{k: r[k] for k in keep} for r in rows]))
        finals: dict[str, list[float]] = {}
        for r in rows:  # older CSVs have no base/seed columns: each row is its own group
            if r.get("test_top1_final"):
                finals.setdefault(r.get("base") or r["run"], []).append(float(r["test_top1_final"]))
        if any(len(v) > 1 for v in finals.values()):
            parts.append("\nFinal-epoch test top-1 over seeds:\n")
            parts.append(markdown_table([{"run": k, "seeds": len(v), "mean": round(sum(v) / len(v), 2),
                                          "min": min(v), "max": max(v)} for k, v in finals.items()]))
        parts.append("\nPer-epoch validation top-1 (%):\n")
        parts.extend(f"- {r['run']}: {r['curve']}" for r in rows)
    text = "\n".join(parts) + "\n"
    (out / "proof.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    from jsonargparse import ArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--train" in argv:  # one training run (a child of the table part)
        split = argv.index("--")
        own, fit_args = argv[:split], argv[split + 1:]
        train(Path(own[own.index("--record") + 1]), own[own.index("--label") + 1], fit_args, "--test" in own)
        return
    parser = ArgumentParser(prog="gpu_proof.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_proof"), help="output folder")
    parser.add_argument("--data_dir", type=Path | None, default=None, help="folder holding cifar-100-python (table)")
    parser.add_argument("--parts", type=list[str], default=["throughput", "timed_fit", "table"],
                        help="which parts: throughput, timed_fit, table")
    parser.add_argument("--models", type=list[str], default=[v[0] for v in VERSIONS], help="throughput: which versions")
    parser.add_argument("--deadline_s", type=float, default=1e9, help="start no throughput model and stop the "
                        "table's trainings after this many seconds (unfinished runs are reported as such)")
    parser.add_argument("--fit_compile", type=bool, default=False,
                        help="throughput: also time a compiled fit (--model.init_args.compile true)")
    parser.add_argument("--runs", type=list[str] | None, default=None,
                        help="table: only these trainings, by label (e.g. 'V3-Large 1'); default all")
    parser.add_argument("--parallel", type=int, default=3, help="table: trainings at once on the one GPU")
    parser.add_argument("--compile_runs", type=list[str], default=[],
                        help="table: labels of the trainings to torch.compile (e.g. 'V3-Large 1')")
    parser.add_argument("--seeds", type=list[int], default=[0],
                        help="table: run each training once per seed (e.g. [0,1,2]); proof.md adds the means")
    parser.add_argument("--batch", type=int, default=128,
                        help="table: training batch (128: the recipe's measured setting; the LR scales with it)")
    parser.add_argument("--table_args", type=list[str], default=[],
                        help="table: extra fit arguments for every training (e.g. '--trainer.benchmark=false')")
    parser.add_argument("--timed_fit_args", type=list[str], default=[],
                        help="timed_fit: extra fit arguments (e.g. '--trainer.benchmark=false'); rows accumulate")
    parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                        help="run the same code on the CPU with tiny sizes")
    parser.add_argument("--render", action="store_true", help="only re-render proof.md from the CSVs in --out")
    args = parser.parse_args(argv)
    out = output_dir(args.out)
    if not args.render:
        unknown = set(args.parts) - {"throughput", "timed_fit", "table"}
        if unknown:
            parser.error(f"--parts: unknown {sorted(unknown)}; choose from throughput, timed_fit, table")
        if not args.dry_run and not torch.cuda.is_available():
            parser.error("no CUDA GPU here; use --dry-run to rehearse on the CPU")
        if "table" in args.parts and args.data_dir is None and not args.dry_run:
            parser.error("the table part needs --data_dir (the folder that holds cifar-100-python)")
        deadline = time.monotonic() + args.deadline_s
        with tempfile.TemporaryDirectory(prefix="gpu_proof_") as tmp:
            work = Path(tmp)
            if "throughput" in args.parts:
                throughput(out, work, args.dry_run, deadline, args.models, args.fit_compile)
            if "timed_fit" in args.parts:
                timed_fit(out, work, args.dry_run, args.timed_fit_args)
            if "table" in args.parts:
                data_dir = args.data_dir or write_random_archive(work / "random_table", 64, 16)
                table(out, work, Path(data_dir).resolve(), args.dry_run, deadline, args.compile_runs, args.parallel,
                      args.runs, args.batch, args.table_args, args.seeds)
            with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
                for sub in ("logs", "runs"):
                    if (work / sub).exists():
                        tar.add(work / sub, arcname=sub)
    print(render(out))


if __name__ == "__main__":
    main()
