"""A sweep's results: one row per trial (swept values, model size, metric, test accuracy, time, state) and a plot.

Everything comes from the study, so every machine reports the same table: state, swept values,
the metric reported each epoch and times from Optuna; model, parameters, MACs, epochs, test
accuracy and the test's most-confused classes from the facts the worker that ran the trial read
from its run folders (:func:`trial_facts`, with ``report``'s own functions) and stored with it.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ...errors import UserError
from ..tables import confusion_sections, duration, markdown_table, output_dir, save_figure, write_report
from .commands import cli_value
from .storage import SPEC_ATTR, grid_key, open_storage, retry_history, safe_url
from .trial import PRUNED_ATTR

__all__ = ["load_study", "sweep_rows", "write_sweep_report", "column_names", "trial_facts", "FACTS_ATTR"]

#: Trial attribute: what :func:`trial_facts` read from the trial's run folders.
FACTS_ATTR = "facts"


def trial_facts(log_dir: Path) -> dict[str, Any]:
    """The report's row of the fit run in ``log_dir`` (and its test in ``<log_dir>_test``), as JSON data.

    Adds ``errors``: the test's most-confused pairs and worst classes as markdown. Empty when the
    fit left no run folder.
    """
    from ..runs import read_run, report_rows

    test_dir = log_dir.with_name(f"{log_dir.name}_test")
    if not log_dir.is_dir():
        return {}
    try:
        row = report_rows([read_run(d) for d in (log_dir, test_dir) if d.is_dir()])[0]
    except Exception:  # noqa: BLE001 - an unreadable log leaves the row blank; it must not fail the trial
        return {}
    facts = {k: v for k, v in row.items() if k != "run"}
    facts["errors"] = confusion_sections([(row["run"], test_dir)] if row["test_run"] else [])
    return facts


def load_study(name: str, url: str) -> optuna.Study:
    """The sweep's study from its storage, or one line saying it is not there."""
    from .storage import _sqlite_path

    path = _sqlite_path(url)
    if path is not None and not path.is_file():
        raise UserError(
            f"no sweep database {path}; run `python -m mobilenet_lab sweep --config "
            f"configs/sweeps/{name}.yaml` first, or pass --storage"
        )
    storage = open_storage(url, heartbeat=False)
    names = optuna.study.get_all_study_names(storage)
    if name not in names:
        raise UserError(f"no sweep named {name!r} in {safe_url(url)} (it holds: {', '.join(names) or 'none'})")
    study = optuna.load_study(study_name=name, storage=storage)
    if SPEC_ATTR not in study.user_attrs:
        raise UserError(f"study {name!r} in {safe_url(url)} is not a mobilenet_lab sweep (no sweep description)")
    return study


def column_names(keys: list[str]) -> dict[str, str]:
    """Short column names of the swept keys: ``width_mult``, ``model`` (for ``model.class_path``), ``lr``."""

    def short(key: str) -> str:
        parts = [p for p in key.split(".") if p != "init_args"]
        if parts[-1] == "class_path" and len(parts) > 1:
            parts = parts[:-1]
        return parts[-1]

    names = {k: short(k) for k in keys}
    if len(set(names.values())) < len(names):  # ambiguous: use the whole key without init_args
        names = {k: ".".join(p for p in k.split(".") if p != "init_args") for k in keys}
    return names


def _value(value: Any) -> Any:
    if isinstance(value, str) and "." in value and value.rsplit(".", 1)[-1][:1].isupper():
        return value.rsplit(".", 1)[-1]  # a class path: its class name
    return value


def _state(trial: FrozenTrial, retried_as: dict[int, int], rerun_as: dict[int, int]) -> str:
    """``complete``, ``pruned``, ``failed`` (the only state that fails a sweep), ``interrupted``/``failed (rerun
    as ...)`` (cut off or failed, then run again), ``running`` or ``queued``."""
    if trial.state == TrialState.COMPLETE:
        return "complete"
    if trial.state == TrialState.PRUNED:
        return f"pruned (epoch {trial.user_attrs[PRUNED_ATTR]})" if PRUNED_ATTR in trial.user_attrs else "pruned"
    if trial.state == TrialState.FAIL:
        if trial.number in retried_as:
            return f"interrupted (rerun as trial {retried_as[trial.number]})"
        return f"failed (rerun as trial {rerun_as[trial.number]})" if trial.number in rerun_as else "failed"
    return {TrialState.RUNNING: "running", TrialState.WAITING: "queued"}.get(trial.state, trial.state.name.lower())


def _seconds(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None:
        return None
    end = trial.datetime_complete or datetime.datetime.now()
    return (end - trial.datetime_start).total_seconds()


def sweep_rows(study: optuna.Study) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, column order): one row per trial, in trial order."""
    spec = study.user_attrs[SPEC_ATTR]
    keys = list(spec["keys"])
    names = column_names(keys)
    metric, maximize = spec["metric"], spec["direction"] == "maximize"
    trials = study.get_trials(deepcopy=False)
    retried_as, rerun_as, latest = {}, {}, {}
    for t in trials:
        history = retry_history(t)
        if history:
            retried_as[history[-1]] = t.number
        elif spec["grid"] is not None and grid_key(t) in latest:  # a re-run queued a failed point again
            rerun_as[latest[grid_key(t)]] = t.number
        latest[grid_key(t)] = t.number
    rows = []
    for t in trials:
        run_name = f"{study.study_name}/trial_{t.number:03d}"
        run = t.user_attrs.get(FACTS_ATTR) or {}
        values = list(t.intermediate_values.values())
        best = (max(values) if maximize else min(values)) if values else None
        params = t.params or t.user_attrs.get("grid_params") or {}
        row: dict[str, Any] = {"trial": t.number, "state": _state(t, retried_as, rerun_as)}
        row.update({names[k]: _value(params.get(k)) for k in keys})
        for column, value in {  # a swept column of the same name (model) wins
            "model": run.get("model"),
            "width": run.get("width"),
            "params": run.get("params"),
            "MACs": run.get("MACs"),
            "epochs": run.get("epochs") if run.get("epochs") is not None else (len(values) or None),
            f"best {metric}": best,
            "test/acc": run.get("last_test_acc"),
            "time": _seconds(t),
            "run": run_name if t.state != TrialState.WAITING else "",
            "note": t.user_attrs.get("error", ""),
            "errors": run.get("errors") or "",  # not a column: the test's most-confused classes
        }.items():
            row.setdefault(column, value)
        rows.append(row)
    columns = ["trial", "state", *names.values()]
    columns += [
        c
        for c in ("model", "width", "params", "MACs", "epochs", f"best {metric}", "test/acc", "time", "run", "note")
        if c not in columns
    ]
    if not any(r["note"] for r in rows):
        columns.remove("note")
    return rows, columns


def _fraction(v: Any) -> str:
    return "" if v is None else f"{v:.4f}"


def plot_sweep(rows: list[dict[str, Any]], study: optuna.Study, path: Path) -> str:
    """Accuracy against the first numeric swept key (one line per value of the others), else against MACs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = study.user_attrs[SPEC_ATTR]
    names = list(column_names(list(spec["keys"])).values())
    metric = f"best {spec['metric']}"
    tested = any(r["test/acc"] is not None for r in rows)
    y_key = "test/acc" if tested else metric
    done = [r for r in rows if r[y_key] is not None]
    numeric = [
        n for n in names if done and all(isinstance(r[n], (int, float)) and not isinstance(r[n], bool) for r in done)
    ]
    x_key = numeric[0] if numeric else "MACs"
    # A grid repeats each value of the other keys: one line per combination. A search rarely does: one series.
    series_keys = [n for n in names if n != x_key] if spec["grid"] is not None else []
    fig, ax = plt.subplots(figsize=(7, 5))
    groups: dict[str, list[tuple[float, float, str]]] = {}
    for r in done:
        x = r[x_key] / 1e6 if x_key == "MACs" and r[x_key] else r[x_key]
        if x is None:
            continue
        label = ", ".join(f"{k}={r[k]}" for k in series_keys) or spec["metric"]
        note = "pruned" if r["state"].startswith("pruned") else ""
        groups.setdefault(label, []).append((float(x), float(r[y_key]), note))
    for i, (label, points) in enumerate(sorted(groups.items())):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color=f"C{i % 10}", label=label)
        for x, y, note in points:
            if note:
                ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if (
        x_key != "MACs"
        and numeric
        and all(r[x_key] > 0 for r in done)
        and max(r[x_key] for r in done) > 20 * min(r[x_key] for r in done)
    ):
        ax.set_xscale("log")
    ax.set_xlabel("MMACs per image" if x_key == "MACs" else x_key)
    ax.set_ylabel(y_key)
    ax.set_title(f"sweep {study.study_name}: {y_key} vs {x_key}")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=7)
    save_figure(fig, path)
    return x_key


def markdown(study: optuna.Study, rows: list[dict[str, Any]], columns: list[str], url: str) -> str:
    spec = study.user_attrs[SPEC_ATTR]
    metric = f"best {spec['metric']}"
    formats = {metric: _fraction, "test/acc": _fraction, "time": duration}
    table = markdown_table([{c: r.get(c) for c in columns} for r in rows], formats)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"].split(" ")[0]] = counts.get(r["state"].split(" ")[0], 0) + 1
    finished = [r for r in rows if r[metric] is not None and r["state"] in ("complete",)]
    best = (max if spec["direction"] == "maximize" else min)(finished, key=lambda r: r[metric]) if finished else None
    what = "grid" if spec["grid"] is not None else "search"
    lines = [
        f"# Sweep {study.study_name}",
        "",
        f"- {what} over {', '.join(spec['keys'])}; base {' + '.join(spec['base'])}"
        + (f"; set {', '.join(f'{k}={cli_value(v)}' for k, v in spec['set'].items())}" if spec["set"] else ""),
        f"- storage {safe_url(url)}; trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
        f"- {metric}: the best of the trial's per-epoch {spec['metric']}; test/acc: the last test of the trial's "
        "checkpoint; time: start to end of the trial (fit, and test when the sweep tests)",
    ]
    if best is not None:
        lines.append(f"- best: trial {best['trial']} ({best['run']}), {metric} {best[metric]:.4f}")
    return "\n".join(lines) + "\n\n" + table + "\n"


def write_sweep_report(study: optuna.Study, url: str, out: Path, quiet: bool = False) -> list[dict[str, Any]]:
    """Writes ``<out>/report.md``, ``report.csv`` and ``report.png`` for the sweep; prints the table."""
    rows, columns = sweep_rows(study)
    output_dir(out)
    text = markdown(study, rows, columns, url) + "".join(r["errors"] for r in rows)
    write_report(out, "report", text, rows, columns, lambda path: plot_sweep(rows, study, path), quiet)
    return rows
