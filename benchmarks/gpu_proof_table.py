"""The GPU proof's table part (``gpu_proof.py --parts [table]``): the replaced implementation's 20-epoch rows.

The six rows (V3-Small/V3-Large x 0.25/0.5/1.0, ``downsamples_removed: 3``, the short recipe), trained on
all 50,000 images and scored on the test set as the replaced implementation did, plus recipe comparisons
on V3-Small 0.25 (:data:`VARIANTS`). Each training runs in its own process (``gpu_proof_train.py``), at most
``parallel`` at once on the one GPU, once per seed; writes ``table.csv`` and ``runs.jsonl``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_proof_train import RECIPE, device_args, read_record, run_training  # noqa: E402

from mobilenet_lab.tools.tables import write_csv  # noqa: E402

#: The replaced implementation's 20-epoch test top-1 (8x8 final map; best epoch, scored on the test set).
REPLACED = [
    ("V3-Small", "v3_small", 0.25, 60.13),
    ("V3-Small", "v3_small", 0.5, 66.37),
    ("V3-Small", "v3_small", 1.0, 69.44),
    ("V3-Large", "v3_large", 0.25, 65.03),
    ("V3-Large", "v3_large", 0.5, 69.50),
    ("V3-Large", "v3_large", 1.0, 71.75),
]
#: Recipe comparisons on V3-Small 0.25 (8x8): label -> fit arguments replacing or added to the recipe's.
#: ``--no_recipe`` drops the short recipe; ``--config=...`` entries are applied last (after the table's
#: ``--trainer.callbacks=[]``), so a callback recipe such as the EMA one survives.
#: The first two are the dry run's: a late callback recipe and a --data override.
VARIANTS: dict[str, list[str]] = {
    "short, EMA of the weights": [f"--config={ROOT / 'configs/recipes/ema.yaml'}"],
    "short, batch 512 (gpu preset)": ["--data.batch_size=512"],
    "short, batch 64": ["--data.batch_size=64"],
    "shipped 200-epoch recipe": ["--no_recipe"],
    "short, lr 0.2 per 128": ["--model.init_args.optimizer.init_args.lr=0.2"],
    "short, weight decay 1e-4": ["--model.init_args.optimizer.init_args.weight_decay=1e-4"],
    "short, 45k train / 5k val (our protocol)": ["--data.val_size=5000"],
}

Training = tuple[str, list[str], dict[str, Any]]  # label, fit arguments, what the table row says about it


def trainings(dry: bool) -> list[Training]:
    """Every training of the table: the six rows (the first only in a dry run), then the recipe comparisons."""
    runs: list[Training] = []
    for version, config, width, replaced in REPLACED if not dry else REPLACED[:1]:
        args = [f"--config={ROOT / 'configs' / f'{config}.yaml'}", f"--config={ROOT / RECIPE}"]
        meta = {"model": version, "width": width, "recipe": "short", "replaced": replaced}
        runs.append((f"{version} {width:g}", [*args, f"--model.init_args.width_mult={width}"], meta))
    for label, extra in VARIANTS.items() if not dry else list(VARIANTS.items())[:2]:
        base = [f"--config={ROOT / 'configs/v3_small.yaml'}"]
        if "--no_recipe" not in extra:
            base.append(f"--config={ROOT / RECIPE}")
        own = [a for a in extra if a != "--no_recipe" and not a.startswith("--config=")]
        late = [a for a in extra if a.startswith("--config=")]
        meta = {"model": "V3-Small", "width": 0.25, "recipe": label, "replaced": 60.13, "late": late}
        runs.append((f"V3-Small 0.25, {label}", [*base, "--model.init_args.width_mult=0.25", *own], meta))
    return runs


def table(
    out: Path,
    work: Path,
    data_dir: Path,
    dry: bool,
    deadline: float,
    compile_runs: list[str],
    parallel: int,
    only: list[str] | None = None,
    batch: int = 128,
    extra_args: list[str] | None = None,
    seeds: list[int] | None = None,
) -> None:
    """Runs the trainings (``only``: these labels) once per seed, ``parallel`` at once; writes table.csv, runs.jsonl."""
    runs = trainings(dry)
    epochs = 1 if dry else 20
    # Evaluation batches of 1000 divide both 10,000 and 5,000: one shape, no recompiles when compiled.
    common = [
        *device_args(dry),
        f"--data.data_dir={data_dir}",
        "--data.val_size=0",
        "--data.eval_batch_size=1000",
        "--model.init_args.downsamples_removed=3",
        f"--trainer.max_epochs={epochs}",
        f"--data.batch_size={16 if dry else batch}",
        *(extra_args or []),
    ]
    if dry:
        common += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    if only is not None:
        unknown = set(only) - {label for label, _, _ in runs}
        if unknown:
            raise SystemExit(f"error: --runs: unknown {sorted(unknown)}; the trainings are {[r[0] for r in runs]}")
        runs = [r for r in runs if r[0] in only]
    # Each training once per seed (seed 0 keeps the plain label): two seeds of one recipe ended a point
    # apart on an H100, so candidates are compared by their means.
    runs = [
        (
            label if seed == 0 else f"{label}, seed {seed}",
            [*args, f"--seed_everything={seed}"],
            {**meta, "base": label, "seed": seed},
        )
        for label, args, meta in runs
        for seed in (seeds or [0])
    ]
    waiting = []
    for label, args, meta in runs:
        # Order matters: the run's own arguments (configs, then overrides) come before the common ones,
        # except --data.val_size/batch_size overrides of a variant, which must win: put them last, and a
        # variant's callback recipe (--config=...) after the fixed `--trainer.callbacks=[]`.
        overrides = [a for a in args if a.startswith("--data.")]
        fit_args = [a for a in args if not a.startswith("--data.")] + common + overrides
        if label in compile_runs:
            fit_args.append("--model.init_args.compile=true")
        waiting.append((label, fit_args, meta))
    procs = run_all(work, waiting, parallel, deadline)
    rows = [table_row(proc, meta) for proc, meta in procs]
    write_csv(rows, out / "table.csv", list(rows[0]))
    with open(out / "runs.jsonl", "w") as f:
        for proc, _ in procs:
            if proc.record.is_file():
                f.write(proc.record.read_text())


def run_all(work: Path, waiting: list[Training], parallel: int, deadline: float) -> list[tuple[Any, dict[str, Any]]]:
    """Runs the trainings, at most ``parallel`` at once, until all end or the deadline stops the rest.

    Trainings on one GPU are time-sliced between processes: fourteen at once on an H200 took 13.5-15 s per
    V3-Small 0.25 epoch (BENCHMARKS.md, "On a GPU"), so the rest wait their turn. A training's ``meta`` may
    name ``late`` fit arguments and a ``weights_to`` file (``run_training``'s ``late`` and ``weights``; the full
    part uses this room too). Returns (process, meta) of every training started, each ended (killed at the
    deadline) and its log closed.
    """
    procs: list[tuple[Any, dict[str, Any]]] = []
    while (waiting or any(p.poll() is None for p, _ in procs)) and time.monotonic() < deadline:
        while waiting and sum(p.poll() is None for p, _ in procs) < parallel:
            label, fit_args, meta = waiting.pop(0)
            late, weights = meta.get("late"), meta.get("weights_to")
            procs.append((run_training(work, label, fit_args, timeout=0, wait=False, late=late, weights=weights), meta))
        time.sleep(1)
    for label, _, _ in waiting:  # never started: reported as such
        print(f"table: {label} not started (deadline)", flush=True)
    for proc, _ in procs:
        stopped = proc.poll() is None
        if stopped:
            proc.kill()
        proc.wait()
        proc.log.close()
        if not stopped and proc.returncode != 0:  # a failed training says why, here and not only in logs.tar.gz
            tail = Path(proc.log.name).read_text(errors="replace").splitlines()[-15:]
            print(f"table: {proc.label} failed (exit {proc.returncode}):", *tail, sep="\n  ", flush=True)
    return procs


def table_row(proc: Any, meta: dict[str, Any]) -> dict[str, Any]:
    """One row of ``table.csv`` from a training's record: accuracies in %, the gain over the replaced one."""
    r = read_record(proc.record)
    final = r.get("test_acc")
    return {
        "run": proc.label,
        "base": meta["base"],
        "seed": meta["seed"],
        "model": meta["model"],
        "width": meta["width"],
        "recipe": meta["recipe"],
        "train_images": r.get("train_images"),
        "epochs_done": len(r["epochs"]),
        "test_top1_final": None if final is None else round(100 * final, 2),
        "test_top5_final": None if r.get("test_acc_top5") is None else round(100 * r["test_acc_top5"], 2),
        "val_top1_best_epoch": round(100 * max(r["epochs"]), 2) if r["epochs"] else None,
        "replaced": meta["replaced"],
        "gain": None if final is None else round(100 * final - meta["replaced"], 2),
        "fit_s": r.get("fit_s"),
        "batch": r.get("batch"),
        "exit": proc.returncode,
        "curve": " ".join(f"{100 * v:.1f}" for v in r["epochs"]),
    }
