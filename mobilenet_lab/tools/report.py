"""``python -m mobilenet_lab report``: one table of all training runs under a log directory.

Walks ``<logdir>/<name>/version_N/`` (the TensorBoardLogger's layout; ``--logdir`` may also be a
single ``<name>`` folder), reads each run's ``config.yaml`` (saved by the LightningCLI),
``hparams.yaml`` and TensorBoard scalars, and lists per run: model (registered name), width, stem,
image size, parameters and MACs (computed from the model config at the run's image size), epochs,
wall time (first to last logged event), accelerator, best ``val/acc`` and the last ``test/acc``.

A ``test`` command logs under a version folder of its own: it is matched to the fit run whose
checkpoint it tested (``ckpt_path`` in its config.yaml: ``checkpoints/<name>/version_N/...``);
an unmatched test run is listed as a row of its own.

Writes ``<out>/report.md``, ``report.csv`` and ``report.png`` (accuracy vs latency with
``--benchmark_csv`` from ``python -m mobilenet_lab benchmark``, else accuracy vs MACs). For each
tested run the report also lists the 10 most-confused class pairs and the 10 worst classes (from
the ``confusion_matrix.csv`` the test wrote).

``--sweep NAME`` tabulates a sweep instead (``python -m mobilenet_lab sweep``): one row per trial
with the swept values, read from the sweep's storage (``--storage``, default
``sqlite:///sweeps/NAME.db``), written to ``sweeps/NAME/`` unless ``--out`` says otherwise.

Example:
    python -m mobilenet_lab report --logdir lightning_logs --out benchmarks_out
    python -m mobilenet_lab report --sweep quick_widths
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..models import ModelDescription
from .tables import markdown_table, output_dir, write_csv

__all__ = ["main", "collect_runs", "report_rows", "find_runs", "read_scalars", "run_description", "confusion_sections",
           "COLUMNS"]

#: Columns of report.csv and of the markdown table.
COLUMNS = [
    "run", "model", "width", "stem", "image_size", "params", "MACs", "epochs", "wall_time_s",
    "accelerator", "best_val_acc", "last_test_acc", "test_run",
]


# --------------------------------------------------------------------------------- reading
class _Loader(yaml.SafeLoader):
    """A safe YAML loader that reads unknown tags (``!!python/...``) as plain data instead of failing."""


def _unknown_tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", _unknown_tag)
_Loader.add_multi_constructor("!", _unknown_tag)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_scalars(run_dir: Path) -> dict[str, list[tuple[float, int, float]]]:
    """TensorBoard scalars of a run folder: tag -> [(wall_time, step, value)], in logged order."""
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    if not any(run_dir.glob("events.out.tfevents.*")):
        return {}
    acc = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    acc.Reload()
    return {tag: [(e.wall_time, e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()[SCALARS]}


def _version_key(path: Path) -> tuple[int, str]:
    m = re.fullmatch(r"version_(\d+)", path.name)
    return (int(m.group(1)) if m else -1, path.name)


def find_runs(logdir: Path) -> list[Path]:
    """Run folders: ``<logdir>/<name>/<version>/`` (or ``<logdir>/<version>/``) with logs in them."""
    def is_run(d: Path) -> bool:
        return d.is_dir() and (any(d.glob("events.out.tfevents.*")) or (d / "hparams.yaml").is_file()
                               or (d / "config.yaml").is_file())

    direct = sorted((d for d in logdir.iterdir() if is_run(d)), key=_version_key)
    if direct:  # logdir is one experiment's folder
        return direct
    runs = []
    for name_dir in sorted(d for d in logdir.iterdir() if d.is_dir()):
        runs += sorted((d for d in name_dir.iterdir() if is_run(d)), key=_version_key)
    return runs


# ------------------------------------------------------------------------------ model spec
def run_description(config: dict[str, Any], hparams: dict[str, Any]) -> ModelDescription | None:
    """The ModelDescription of a run's network (None if its model cannot be described).

    From config.yaml's ``model: {class_path, init_args}`` (the LightningCLI), else hparams.yaml
    (``_class_path``, or the generic ``ImageClassifier``'s ``model_name``); the module class turns
    them into a description (``modules.description_of``), options missing from both take its defaults.
    """
    from ..modules import ImageClassifier, description_of

    model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
    class_path = model_cfg.get("class_path") or hparams.get("_class_path") or ""
    args = {k: v for k, v in hparams.items() if not k.startswith("_")}
    args.update(model_cfg.get("init_args") or {})
    if args.get("num_classes") is None:
        args["num_classes"] = _data_args(config).get("num_classes", 100)
    cls = _import_class(class_path) or (ImageClassifier if args.get("model_name") else None)
    if cls is None:
        return None
    try:
        return description_of(cls, args)
    except (ValueError, TypeError):
        return None


def _data_args(config: dict[str, Any]) -> dict[str, Any]:
    """The data module's arguments: ``data:`` holds them directly, or under ``init_args`` (subclass mode)."""
    data = config.get("data")
    if not isinstance(data, dict):
        return {}
    return data.get("init_args") or {} if "class_path" in data else data


def _import_class(class_path: str) -> Any:
    if "." not in class_path:
        return None
    import importlib

    module, _, attr = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception:  # noqa: BLE001 - an unknown class just gives no defaults
        return None


_COUNT_CACHE: dict[tuple, tuple[int | None, int | None]] = {}


def params_and_macs(description: ModelDescription | None, image_size: int) -> tuple:
    """(parameters, MACs) of the architecture at ``image_size``; (None, None) if it cannot be built."""
    from ..models import count_macs, count_params, create_model

    if description is None:
        return None, None
    key = (description.replace(dropout=0.0), image_size)  # dropout changes no count
    if key not in _COUNT_CACHE:
        try:
            model = create_model(key[0])
            _COUNT_CACHE[key] = (count_params(model), count_macs(model, image_size))
        except (ValueError, TypeError, RuntimeError):
            _COUNT_CACHE[key] = (None, None)
    return _COUNT_CACHE[key]


# ------------------------------------------------------------------------------------ runs
def _checkpoint_run(ckpt_path: Any) -> tuple[str, str] | None:
    """(name, version) of the fit run a checkpoint path ``.../<name>/<version>/<file>.ckpt`` belongs to."""
    if not isinstance(ckpt_path, str) or not ckpt_path.endswith(".ckpt"):
        return None
    parts = Path(ckpt_path).parts
    return (parts[-3], parts[-2]) if len(parts) >= 3 else None


def _accelerator(config: dict[str, Any]) -> str:
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    if not trainer:
        return ""
    parts = [str(trainer.get("accelerator", "auto"))]
    if trainer.get("devices") not in (None, "auto"):
        parts.append(f"x{trainer['devices']}")
    if trainer.get("precision") not in (None,):
        parts.append(f"({trainer['precision']})")
    return " ".join(parts)


def collect_runs(logdir: Path) -> list[dict[str, Any]]:
    """Everything the report needs from each run folder, one dict per run."""
    runs = []
    for run_dir in find_runs(logdir):
        config = read_yaml(run_dir / "config.yaml")
        hparams = read_yaml(run_dir / "hparams.yaml")
        scalars = read_scalars(run_dir)
        description = run_description(config, hparams)
        data_args = _data_args(config)
        image_size = int(data_args.get("image_size") or hparams.get("image_size") or 32)
        walls = [w for events in scalars.values() for w, _, _ in events]
        val = [v for _, _, v in scalars.get("val/acc", [])]
        test = [v for _, _, v in scalars.get("test/acc", [])]
        if "epoch" in scalars:
            epochs = int(max(v for _, _, v in scalars["epoch"])) + 1
        else:
            epochs = len(val)
        is_test = bool(test) and "train/loss" not in scalars and "val/acc" not in scalars
        runs.append({
            "dir": run_dir,
            "key": (run_dir.parent.name, run_dir.name),
            "run": f"{run_dir.parent.name}/{run_dir.name}",
            "description": description,
            "image_size": image_size,
            "epochs": epochs if not is_test else None,
            "wall_time_s": (max(walls) - min(walls)) if walls else None,
            "accelerator": _accelerator(config),
            "best_val_acc": max(val) if val else None,
            "last_test_acc": test[-1] if test else None,
            "is_test": is_test,
            "tested_run": _checkpoint_run(config.get("ckpt_path")) if is_test else None,
            "last_wall": max(walls) if walls else 0.0,
        })
    return runs


def report_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fit run (with the last matching test run's accuracy), then unmatched test runs."""
    fits = {r["key"]: r for r in runs if not r["is_test"]}
    tests_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
    unmatched = []
    for r in runs:
        if r["is_test"]:
            if r["tested_run"] in fits:
                tests_of.setdefault(r["tested_run"], []).append(r)
            else:
                unmatched.append(r)
    rows = []
    for r in list(fits.values()) + unmatched:
        tests = sorted(tests_of.get(r["key"], []), key=lambda t: (t["last_wall"], _version_key(t["dir"])))
        last_test = tests[-1] if tests else None
        description = r["description"]
        params, macs = params_and_macs(description, r["image_size"])
        rows.append({
            "run": r["run"] + (" (test only)" if r["is_test"] else ""),
            "model": description.name if description else None,
            "width": float(description.width_mult) if description else None,
            "stem": description.stem if description else None,
            "image_size": r["image_size"],
            "params": params,
            "MACs": macs,
            "epochs": r["epochs"],
            "wall_time_s": r["wall_time_s"],
            "accelerator": r["accelerator"],
            "best_val_acc": r["best_val_acc"],
            "last_test_acc": last_test["last_test_acc"] if last_test else r["last_test_acc"],
            "test_run": last_test["run"] if last_test else "",
        })
    return rows


# ---------------------------------------------------------------------------------- output
def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


FORMATS = {
    "wall_time_s": _duration,
    "best_val_acc": lambda v: "" if v is None else f"{v:.4f}",
    "last_test_acc": lambda v: "" if v is None else f"{v:.4f}",
}


def read_latency(benchmark_csv: Path) -> dict[tuple[str, float, str, int], float]:
    """Median batch-1 latency (ms) of our rows per (model, width, stem, image size); CPU rows first."""
    latency: dict[tuple[str, float, str, int], float] = {}
    with open(benchmark_csv, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: r.get("device") != "cpu")  # the CPU row wins when both devices ran
    for r in rows:
        if r.get("impl", "ours") != "ours":
            continue
        try:
            key = (r["model"], float(r["width"]), r["stem"], int(r["image_size"]))
            latency.setdefault(key, float(r["latency_ms"]))
        except (KeyError, ValueError):
            continue
    return latency


def plot(rows: list[dict[str, Any]], path: Path, latency: dict | None = None) -> str:
    """Accuracy vs latency (when known) or vs MACs; returns the x quantity used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def x_of(r: dict[str, Any]) -> float | None:
        if latency is not None:
            return latency.get((r["model"], r["width"], r["stem"], r["image_size"]))
        return r["MACs"] / 1e6 if r["MACs"] else None

    fig, ax = plt.subplots(figsize=(7, 5))
    models = sorted({r["model"] for r in rows if r["model"]})
    for i, model in enumerate(models):
        pts = []
        for r in rows:
            acc = r["last_test_acc"] if r["last_test_acc"] is not None else r["best_val_acc"]
            x = x_of(r) if r["model"] == model else None
            if x is not None and acc is not None:
                pts.append((x, acc, r["width"]))
        pts.sort()
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", color=f"C{i}", label=model)
            for x, a, w in pts:
                ax.annotate("" if w is None else f"{w:g}", (x, a), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
    ax.set_xlabel("batch-1 latency, median (ms, benchmark)" if latency is not None else "MMACs per image")
    ax.set_ylabel("accuracy (last test/acc, else best val/acc)")
    ax.set_title("accuracy vs " + ("latency" if latency is not None else "MACs"))
    ax.grid(alpha=0.3)
    if models:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return "latency" if latency is not None else "MACs"


def markdown_report(rows: list[dict[str, Any]], logdir: Path) -> str:
    table = markdown_table([{k: r.get(k) for k in COLUMNS} for r in rows], FORMATS)
    return (
        f"# Training runs under {logdir}\n\n"
        "- params/MACs: computed from each run's model config at its image size; wall time: first to last "
        "logged event; best_val_acc: max of val/acc; last_test_acc: the last test run of that fit's checkpoint "
        "(test_run)\n\n" + table + "\n"
        + confusion_sections([(r["run"], logdir / r["test_run"]) for r in rows if r.get("test_run")])
    )


def confusion_sections(tested: list[tuple[str, Path]], k: int = 10) -> str:
    """For each (run, its test run's folder) with a ``confusion_matrix.csv``: most-confused pairs, worst classes."""
    from ..confusion import CONFUSION_CSV, confusion_markdown, most_confused, read_confusion_csv, worst_classes

    parts = []
    for run, test_dir in tested:
        path = Path(test_dir) / CONFUSION_CSV
        if not path.is_file():
            continue
        try:
            confusion, names = read_confusion_csv(path)
        except (OSError, ValueError, IndexError):
            continue
        parts.append(
            f"\n## {run}: test errors ({path})\n\n{k} most-confused pairs:\n\n"
            + confusion_markdown(most_confused(confusion, names, k), ("true class", "predicted as", "images",
                                                                      "share of class"))
            + f"\n\n{k} worst classes:\n\n"
            + confusion_markdown(worst_classes(confusion, names, k), ("class", "accuracy", "images")) + "\n"
        )
    return "".join(parts)


# ------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mobilenet_lab report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, default=Path("lightning_logs"),
                   help="TensorBoard log folder of the runs (default: lightning_logs)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: benchmarks_out/, for a sweep sweeps/<name>/)")
    p.add_argument("--sweep", default=None, metavar="NAME",
                   help="tabulate the trials of this sweep (`python -m mobilenet_lab sweep`) instead of --logdir")
    p.add_argument("--storage", default=None,
                   help="the sweep's storage URL (default: sqlite:///sweeps/<name>.db)")
    p.add_argument("--benchmark_csv", type=Path, default=None,
                   help="benchmark.csv of `python -m mobilenet_lab benchmark`: plot accuracy vs its latency")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = build_parser().parse_args(argv)
    if args.sweep is not None:
        from .sweep import report_sweep

        return report_sweep(args.sweep, args.storage, args.out, args.quiet)
    args.out = args.out or Path("benchmarks_out")
    if not args.logdir.is_dir():
        raise UserError(f"--logdir {args.logdir}: no such directory (train with `python -m mobilenet_lab fit` first)")
    if args.benchmark_csv is not None and not args.benchmark_csv.is_file():
        raise UserError(f"--benchmark_csv {args.benchmark_csv}: no such file")
    runs = collect_runs(args.logdir)
    if not runs:
        raise UserError(f"no runs under {args.logdir} (expected <logdir>/<name>/version_N/ with TensorBoard event files)")
    rows = report_rows(runs)
    output_dir(args.out)
    md = markdown_report(rows, args.logdir)
    (args.out / "report.md").write_text(md, encoding="utf-8")
    write_csv(rows, args.out / "report.csv", COLUMNS)
    latency = read_latency(args.benchmark_csv) if args.benchmark_csv else None
    plot(rows, args.out / "report.png", latency)
    if not args.quiet:
        print(md)
        print(f"wrote {args.out / 'report.md'}, {args.out / 'report.csv'}, {args.out / 'report.png'}")
    return rows

