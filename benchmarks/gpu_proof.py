"""The GPU proof in one command: training speed through ``fit`` against a bare compiled loop, the replaced
implementation's 20-epoch table and the full-length trainings, written to one output folder.

    python benchmarks/gpu_proof.py --data_dir <folder holding cifar-100-python> --out gpu_proof
    python benchmarks/gpu_proof.py --dry-run --out /tmp/proof        # the same code on the CPU, tiny sizes

Parts (``--parts``, all by default), so the proof can be spread over short calls to a lent machine:

- ``throughput``: training images/s of V1, V2, V3-Small and V3-Large (width 1.0, CIFAR stem) through
  ``fit`` (the CLI's trainer, data module with the images on the GPU, metrics, logging; bf16-mixed,
  channels_last) against a bare loop over torchvision's same network (our plain network for V1, which
  torchvision lacks) on random batches already on the GPU, compiled; interleaved (fit, bare, fit, bare),
  median ratio. ``fit`` runs eager as the presets do (a compiled fit was slower on an H200, see
  BENCHMARKS.md); ``--fit_compile true`` (or a mode, e.g. ``max-autotune-no-cudagraphs``) times one compiled
  fit too, whose compile cache ``--compile_cache`` keeps; ``--fit_args`` go to every fit (e.g.
  ``[--config=configs/recipes/full_gpu.yaml]`` times the full-length recipe). Random images in the official
  archive format, so it needs no data set.
- ``timed_fit``: a whole ``fit`` of V3-Large 1.0 (4x4 stem), 20 epochs on 45,000 random images with
  validation on 5,000, wall time (the speed does not depend on the pixels).
- ``table``: the six rows of the replaced implementation (V3-Small/V3-Large x 0.25/0.5/1.0, 20
  epochs, ``downsamples_removed: 3``) with ``configs/recipes/short.yaml``, trained on all 50,000 images
  as it did and scored on the test set (final epoch, and best epoch labelled as such), plus the recipe
  comparisons on V3-Small 0.25; several trainings at once on the one GPU (``--parallel``), each once per
  seed of ``--seeds`` (``proof.md`` then gives the mean per training).
- ``full``: V1, V2, V3-Small and V3-Large at width 1.0 (``--full_models``) with ``configs/recipes/full_gpu.yaml``
  over their version configs, on all 50,000 images without validation, the final weights scored once on the
  test set, beside the best public number; ``--full_args`` are added to each fit (e.g. a compile mode, the
  epochs), and the final weights of ``--keep`` (the V3-Large teacher) are written to ``--out``.

Writes ``proof.md`` (all tables, rendered from whatever CSVs the folder holds), ``throughput.csv``,
``timed_fit.csv``, ``table.csv``, ``full.csv``, ``runs.jsonl`` (per-epoch records), ``logs.tar.gz`` (TensorBoard
logs and each training's output) and the kept weights. ``--render`` only re-renders ``proof.md`` from the CSVs
in ``--out``.

This file is the command line; the parts live beside it: ``gpu_proof_speed.py`` (throughput, timed_fit),
``gpu_proof_table.py`` (the table's trainings, run a few at once), ``gpu_proof_full.py`` (the full-length
trainings), ``gpu_proof_train.py`` (one training in its own process and the record it writes) and
``gpu_proof_render.py`` (``proof.md``).
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

from gpu_proof_full import PUBLIC, full  # noqa: E402
from gpu_proof_render import render  # noqa: E402
from gpu_proof_speed import VERSIONS, device_name, throughput, timed_fit, write_random_archive  # noqa: E402
from gpu_proof_table import table  # noqa: E402

from mobilenet_lab.compile import compile_mode  # noqa: E402
from mobilenet_lab.errors import UserError  # noqa: E402
from mobilenet_lab.tools.tables import output_dir  # noqa: E402

PARTS = ("throughput", "timed_fit", "table", "full")


def build_parser():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="gpu_proof.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_proof"), help="output folder")
    parser.add_argument("--data_dir", type=Path | None, default=None, help="folder holding cifar-100-python (table)")
    parser.add_argument(
        "--parts", type=list[str], default=list(PARTS), help="which parts: throughput, timed_fit, table, full"
    )
    parser.add_argument("--models", type=list[str], default=[v[0] for v in VERSIONS], help="throughput: which versions")
    parser.add_argument(
        "--deadline_s",
        type=float,
        default=1e9,
        help="start no throughput model and stop the table's and full part's trainings after this many seconds "
        "(unfinished runs are reported as such)",
    )
    parser.add_argument(
        "--fit_compile",
        type=bool | str,
        default=False,
        help="throughput: also time a compiled fit: true (torch's default mode) or a mode (e.g. "
        "max-autotune-no-cudagraphs)",
    )
    parser.add_argument(
        "--fit_args",
        type=list[str],
        default=[],
        help="throughput: extra arguments of every fit (e.g. '--config=configs/recipes/full_gpu.yaml')",
    )
    parser.add_argument("--rounds", type=int, default=2, help="throughput: interleaved fit/bare rounds per model")
    parser.add_argument(
        "--compile_cache",
        type=Path | None,
        default=None,
        help="a folder of compile caches, one per version config (<config>.bin): read before and written after "
        "each compiled fit (throughput's compiled fit, full trainings compiled by --full_args)",
    )
    parser.add_argument(
        "--runs",
        type=list[str] | None,
        default=None,
        help="table: only these trainings, by label (e.g. 'V3-Large 1'); default all",
    )
    parser.add_argument("--parallel", type=int, default=3, help="table and full: trainings at once on the one GPU")
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
        "--full_models",
        type=list[str],
        default=[p[0] for p in PUBLIC],
        help="full: which networks (width 1.0): V1, V2, V3-Small, V3-Large",
    )
    parser.add_argument(
        "--full_args",
        type=list[str],
        default=[],
        help="full: extra fit arguments for every network (e.g. '--trainer.max_epochs=160', "
        "'--model.init_args.compile=default')",
    )
    parser.add_argument(
        "--keep",
        type=list[str],
        default=["V3-Large"],
        help="full: networks whose final weights are written to --out (a later distillation's teacher)",
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
        for part in ("table", "full"):
            if part in args.parts and args.data_dir is None and not args.dry_run:
                parser.error(f"the {part} part needs --data_dir (the folder that holds cifar-100-python)")
        try:
            compile_mode(args.fit_compile)
        except UserError as err:
            parser.error(f"--fit_compile: {str(err).split('; set')[0]}")
        deadline = time.monotonic() + args.deadline_s
        with tempfile.TemporaryDirectory(prefix="gpu_proof_") as tmp:
            work = Path(tmp)
            if "throughput" in args.parts:
                throughput(
                    out,
                    work,
                    args.dry_run,
                    deadline,
                    args.models,
                    args.fit_compile,
                    args.fit_args,
                    args.rounds,
                    args.compile_cache.resolve() if args.compile_cache else None,
                )
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
            if "full" in args.parts:
                data_dir = args.data_dir or write_random_archive(work / "random_full", 64, 16)
                full(
                    out,
                    work,
                    Path(data_dir).resolve(),
                    args.dry_run,
                    deadline,
                    args.full_models,
                    args.full_args,
                    args.parallel,
                    args.keep,
                    args.compile_cache.resolve() if args.compile_cache else None,
                    device_name(),
                    torch.__version__,
                    ["python", "benchmarks/gpu_proof.py", *(sys.argv[1:] if argv is None else argv)],
                )
            with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
                for sub in ("logs", "runs"):
                    if (work / sub).exists():
                        tar.add(work / sub, arcname=sub)
    print(render(out))


if __name__ == "__main__":
    main()
