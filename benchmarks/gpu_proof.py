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

This file is the command line; the parts live beside it: ``gpu_proof_speed.py`` (throughput, timed_fit),
``gpu_proof_table.py`` (the table's trainings, run a few at once), ``gpu_proof_train.py`` (one training in
its own process and the record it writes) and ``gpu_proof_render.py`` (``proof.md``).
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpu_proof_render import render  # noqa: E402
from gpu_proof_speed import VERSIONS, throughput, timed_fit, write_random_archive  # noqa: E402
from gpu_proof_table import table  # noqa: E402

from mobilenet_lab.tools.tables import output_dir  # noqa: E402

PARTS = ("throughput", "timed_fit", "table")


def build_parser():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="gpu_proof.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_proof"), help="output folder")
    parser.add_argument("--data_dir", type=Path | None, default=None, help="folder holding cifar-100-python (table)")
    parser.add_argument(
        "--parts", type=list[str], default=list(PARTS), help="which parts: throughput, timed_fit, table"
    )
    parser.add_argument("--models", type=list[str], default=[v[0] for v in VERSIONS], help="throughput: which versions")
    parser.add_argument(
        "--deadline_s",
        type=float,
        default=1e9,
        help="start no throughput model and stop the table's trainings after this many seconds (unfinished runs "
        "are reported as such)",
    )
    parser.add_argument(
        "--fit_compile",
        type=bool,
        default=False,
        help="throughput: also time a compiled fit (--model.init_args.compile true)",
    )
    parser.add_argument(
        "--runs",
        type=list[str] | None,
        default=None,
        help="table: only these trainings, by label (e.g. 'V3-Large 1'); default all",
    )
    parser.add_argument("--parallel", type=int, default=3, help="table: trainings at once on the one GPU")
    parser.add_argument(
        "--compile_runs",
        type=list[str],
        default=[],
        help="table: labels of the trainings to torch.compile (e.g. 'V3-Large 1')",
    )
    parser.add_argument(
        "--seeds",
        type=list[int],
        default=[0],
        help="table: run each training once per seed (e.g. [0,1,2]); proof.md adds the means",
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=128,
        help="table: training batch (128: the recipe's measured setting; the LR scales with it)",
    )
    parser.add_argument(
        "--table_args",
        type=list[str],
        default=[],
        help="table: extra fit arguments for every training (e.g. '--trainer.benchmark=false')",
    )
    parser.add_argument(
        "--timed_fit_args",
        type=list[str],
        default=[],
        help="timed_fit: extra fit arguments (e.g. '--trainer.benchmark=false'); rows accumulate",
    )
    parser.add_argument(
        "--dry-run",
        "--dry_run",
        dest="dry_run",
        action="store_true",
        help="run the same code on the CPU with tiny sizes",
    )
    parser.add_argument("--render", action="store_true", help="only re-render proof.md from the CSVs in --out")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    out = output_dir(args.out)
    if not args.render:
        unknown = set(args.parts) - set(PARTS)
        if unknown:
            parser.error(f"--parts: unknown {sorted(unknown)}; choose from {', '.join(PARTS)}")
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
                table(
                    out,
                    work,
                    Path(data_dir).resolve(),
                    args.dry_run,
                    deadline,
                    args.compile_runs,
                    args.parallel,
                    args.runs,
                    args.batch,
                    args.table_args,
                    args.seeds,
                )
            with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
                for sub in ("logs", "runs"):
                    if (work / sub).exists():
                        tar.add(work / sub, arcname=sub)
    print(render(out))


if __name__ == "__main__":
    main()
