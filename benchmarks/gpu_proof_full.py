"""The GPU proof's full-length part (``gpu_proof.py --parts [full]``): V1, V2, V3-Small and V3-Large at width 1.0.

Each network trains with its version config, the GPU preset and ``configs/recipes/full_gpu.yaml`` on all
50,000 training images (``--data.val_size 0``, as the public CIFAR-100 numbers were made), with no
validation during training: nothing is chosen on the test set. The final epoch's weights are scored once on
the 10,000 test images. Each training runs in its own process (``gpu_proof_train.py``), at most ``parallel``
at once; the final weights of the networks in ``keep`` (the V3-Large teacher of a later distillation) are
written to the output folder, cut into pieces a lent machine returns. Writes ``full.csv`` (rows of earlier
calls in the same folder are kept) and adds to ``runs.jsonl``.
"""

from __future__ import annotations

import csv
import shlex
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_proof_table import run_all  # noqa: E402
from gpu_proof_train import device_args, read_record  # noqa: E402

from mobilenet_lab.tools.tables import write_csv  # noqa: E402

FULL_RECIPE = "configs/recipes/full_gpu.yaml"
#: (label, version config, best public CIFAR-100 top-1 at 32x32 from scratch, width 1.0, its source).
PUBLIC = [
    ("V1", "v1", 74.58, "zeiss-microscopy/BSConv README"),
    ("V2", "v2", 74.67, "zeiss-microscopy/BSConv README"),
    ("V3-Small", "v3_small", 72.93, "zeiss-microscopy/BSConv README"),
    ("V3-Large", "v3_large", 75.09, "zeiss-microscopy/BSConv README"),
]


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def fit_arguments(config: str, data_dir: Path, dry: bool, compile_cache: Path | None, extra: list[str]) -> list[str]:
    """One network's fit: version config, device preset, the full recipe, all 50,000 images, no validation."""
    args = [
        f"--config={ROOT / 'configs' / f'{config}.yaml'}",
        *device_args(dry),
        f"--config={ROOT / FULL_RECIPE}",
        f"--data.data_dir={data_dir}",
        "--data.val_size=0",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        "--checkpoint.save_last=false",  # no checkpoint during training: the final weights are written once
        "--checkpoint.save_top_k=0",  # (--keep), and nothing is ranked by validation
    ]
    if compile_cache is not None:  # only read or written when the network is compiled (--full_args)
        args.append(f"--model.init_args.compile_cache={compile_cache / f'{config}.bin'}")
    if dry:  # tiny: two steps of 16 images, one test batch
        args += [
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_test_batches=1",
            "--data.batch_size=16",
        ]
    return [*args, *extra]


def full(
    out: Path,
    work: Path,
    data_dir: Path,
    dry: bool,
    deadline: float,
    models: list[str],
    extra_args: list[str],
    parallel: int,
    keep: list[str],
    compile_cache: Path | None,
    device: str,
    torch_version: str,
    command: list[str],
) -> list[dict[str, Any]]:
    """Trains ``models`` (labels of :data:`PUBLIC`), at most ``parallel`` at once; writes full.csv; returns its rows."""
    networks = {label for label, *_ in PUBLIC}
    unknown = (set(models) | set(keep)) - networks
    if unknown:
        raise SystemExit(
            f"error: --full_models/--keep: unknown {sorted(unknown)}; the networks are {[p[0] for p in PUBLIC]}"
        )
    waiting, metas = [], {}
    for label, config, public, source in PUBLIC:
        if label not in models:
            continue
        name = f"{label} 1.0"
        weights = out / f"{slug(name)}.ckpt" if label in keep else None
        fit_args = fit_arguments(config, data_dir, dry, compile_cache, extra_args)
        meta = {"network": name, "public": public, "source": source, "weights_to": weights}
        waiting.append((name, fit_args, meta))
        metas[name] = meta
    if not waiting:
        return []
    started = time.monotonic()
    procs = run_all(work, waiting, parallel, deadline)
    print(f"full: {len(procs)} trainings in {time.monotonic() - started:.0f} s", flush=True)
    rows = []
    for proc, meta in procs:
        r = read_record(proc.record)
        final = r.get("test_acc")
        rows.append(
            {
                "network": meta["network"],
                "test_top1_final": None if final is None else round(100 * final, 2),
                "test_top5_final": None if r.get("test_acc_top5") is None else round(100 * r["test_acc_top5"], 2),
                "epochs": r.get("epochs_trained", r.get("train_epochs")),
                "wall_s": round(r["ended_at"] - proc.started, 1) if "ended_at" in r else None,
                "fit_s": r.get("fit_s"),
                "train_img_s": r.get("train_img_s"),
                "first_step_s": r.get("step1_s"),
                "public": meta["public"],
                "public_source": meta["source"],
                "batch": r.get("batch"),
                "train_images": r.get("train_images"),
                "compile": r.get("compile"),
                "weights": " ".join(r.get("weights") or []),
                "weights_sha256": r.get("weights_sha256"),
                "exit": proc.returncode,
                "device": device,
                "torch": torch_version,
                "command": shlex.join(command),
            }
        )
        if r.get("weights"):
            print(f"full: {meta['network']} final weights in {out}: {' '.join(r['weights'])}", flush=True)
    earlier = list(csv.DictReader(open(out / "full.csv"))) if (out / "full.csv").is_file() else []
    write_csv([*earlier, *rows], out / "full.csv", list(rows[0]))
    with open(out / "runs.jsonl", "a") as f:
        for proc, _ in procs:
            if proc.record.is_file():
                f.write(proc.record.read_text())
    return rows
