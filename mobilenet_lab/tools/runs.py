"""Finished training runs, read from their log folders: config, hyperparameters, TensorBoard scalars.

What ``report`` (and a sweep's trials) tabulates: ``collect_runs`` walks
``<logdir>/<name>/version_N/`` (``read_run`` reads one), ``report_rows`` turns the runs into one row
per fit (matched with the test runs of its checkpoints). No Lightning: the files are read as YAML and event files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..models import ModelDescription

__all__ = [
    "collect_runs",
    "read_run",
    "report_rows",
    "find_runs",
    "read_scalars",
    "read_yaml",
    "run_description",
    "params_and_macs",
]


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
        return d.is_dir() and (
            any(d.glob("events.out.tfevents.*")) or (d / "hparams.yaml").is_file() or (d / "config.yaml").is_file()
        )

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
    from ..classifier import ImageClassifier
    from ..versions import description_of

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
    return [read_run(run_dir) for run_dir in find_runs(logdir)]


def read_run(run_dir: Path) -> dict[str, Any]:
    """Everything the report needs from one run folder (``<name>/<version>``)."""
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
    return {
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
    }


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
        rows.append(
            {
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
            }
        )
    return rows
