"""``python -m mobilenet_lab sweep``: train many variants of one config, on one machine or many, resumable.

A sweep file (``configs/sweeps/*.yaml``) names the base training config(s) and either a grid
(every combination is a trial) or a search space sampled by an Optuna sampler, the metric that
ranks trials, and optionally a pruner that stops weak trials early::

    base: [configs/quickstart.yaml]
    set: {trainer.max_epochs: 2}                      # fixed for every trial
    grid:
      model.init_args.width_mult: [0.25, 0.5, 1.0]    # any key of the fit command line

Each trial is an ordinary ``fit`` (same CLI, its own ``lightning_logs/<sweep>/trial_NNN`` and
``checkpoints/<sweep>/trial_NNN``, under ``--root`` when given), run as a child process. The study
lives in an Optuna storage (``sqlite:///sweeps/<name>.db`` by default, a PostgreSQL URL with
``--storage`` for several machines): running the same command again continues a killed sweep
(finished trials are kept; a trial cut off is failed and queued again, and resumes from its
``last.ckpt``), ``--workers N`` runs N trials at once (one GPU each when there are GPUs), and the
same command with the same ``--storage`` on other machines adds workers to the sweep. The command
exits with status 1 when trials failed (complete and pruned trials are a success).

Modules: ``spec`` (the sweep file), ``commands`` (each trial's fit and test command lines, checked
first), ``storage`` (the study, its database and locks), ``runner`` (workers and trial processes),
``devices`` (GPUs and threads per trial), ``trial`` (the callback inside each trial's fit),
``results`` (the facts of each trial, the table).

Examples:
    python -m mobilenet_lab sweep --config configs/sweeps/quick_widths.yaml -- --data.data_dir /path/to/datasets
    python -m mobilenet_lab report --sweep quick_widths
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ...errors import UserError

__all__ = ["main", "report_sweep"]


def _require_optuna() -> None:
    """Optuna is an optional extra: say how to install it; quiet its per-trial INFO lines and API notices."""
    import warnings

    try:
        import optuna
        import optuna_integration  # noqa: F401
    except ImportError:
        raise UserError('sweeps need Optuna: pip install -e ".[sweep]" (optuna, optuna-integration)') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep prints its own line per trial
    # Heartbeat retries are marked experimental in Optuna; nothing for a user to act on.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _log_roots(config: Any) -> tuple[Path, Path]:
    """(logger folder, checkpoint folder) of the trials, from a parsed fit config."""
    logger = config.trainer.get("logger")
    class_path = getattr(logger, "class_path", None) if logger not in (None, True, False) else None
    if logger is False or (class_path and not class_path.endswith("TensorBoardLogger")) or isinstance(logger, list):
        raise UserError(
            "a sweep needs the TensorBoard logger (the report and the HParams tab read each trial's "
            "logs): remove trainer.logger from the base config or set it to TensorBoardLogger"
        )
    save_dir = getattr(getattr(logger, "init_args", None), "save_dir", None) or "lightning_logs"
    return Path(str(save_dir)), Path(str(config.checkpoint.root))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    _require_optuna()
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1 :]
    from .commands import check_points
    from .results import write_sweep_report
    from .runner import Runner
    from .spec import parse
    from .storage import default_storage, open_storage, open_study, safe_url

    spec, cfg = parse(argv)
    url = cfg.storage or default_storage(spec.name)
    if cfg.root is not None:  # after the user's arguments: --root wins
        root = Path(cfg.root).absolute()
        extra += [
            f"--trainer.logger.init_args.save_dir={root / 'lightning_logs'}",
            f"--checkpoint.root={root / 'checkpoints'}",
        ]
    config = check_points(spec, extra)
    log_root, checkpoint_root = _log_roots(config)
    storage = open_storage(url)
    study, created = open_study(spec, storage, url, log_root)
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        state = {"WAITING": "queued"}.get(trial.state.name, trial.state.name.lower())
        states[state] = states.get(state, 0) + 1
    size = len(spec.grid_points()) if spec.is_grid else spec.n_trials
    print(
        f"[sweep {spec.name}] {'created' if created else 'continuing'} in {safe_url(url)}: "
        f"{'grid of' if spec.is_grid else 'search of'} {size} trials over {', '.join(spec.keys)}"
        + (f" ({', '.join(f'{n} {s}' for s, n in states.items())})" if states else "")
        + f"; logs in {log_root / spec.name}",
        flush=True,
    )
    runner = Runner(spec, study, storage, url, extra, log_root, checkpoint_root)
    stopped = runner.run(cfg.workers)
    if stopped is not None:
        print(f"stopped: sweep {spec.name} interrupted; run the same command to continue", file=sys.stderr)
        sys.exit(128 + stopped)
    rows = write_sweep_report(study, url, Path("sweeps") / spec.name)
    failed = [r for r in rows if r["state"] == "failed"]
    if failed:
        print(
            f"failed: sweep {spec.name}: {len(failed)} of {len(rows)} trials failed ("
            + "; ".join(f"trial {r['trial']}: {r['note']}" for r in failed[:3])
            + (" ..." if len(failed) > 3 else "")
            + "); fix the cause and run the same command to run them again",
            file=sys.stderr,
        )
        sys.exit(1)
    return rows


def report_sweep(name: str, storage: str | None, out: Path | None, quiet: bool = False) -> list[dict[str, Any]]:
    """``report --sweep NAME``: the sweep's table from its storage."""
    _require_optuna()
    from .results import load_study, write_sweep_report
    from .storage import default_storage

    if name.endswith((".yaml", ".yml")):
        name = Path(name).name.rsplit(".", 1)[0]
    url = storage or default_storage(name)
    return write_sweep_report(load_study(name, url), url, out or Path("sweeps") / name, quiet)
