"""The sweep file: what to vary, on which training config, judged by which metric.

Parsed by jsonargparse (every field can also be given or overridden on the command line), then
checked against the training CLI itself (:func:`commands.check_points`): each swept and fixed key
must be one ``fit`` accepts.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from ...errors import UserError
from ..arguments import one_line

__all__ = ["Range", "SweepSpec", "build_parser", "parse", "build_pruner", "build_sampler"]

#: A value of a grid or a categorical search dimension (what Optuna can store).
Value = bool | int | float | str | None


@dataclass
class Range:
    """A numeric interval of a search space (Optuna's ``suggest_float`` or, with ``integer``, ``suggest_int``).

    Args:
        low: Smallest value.
        high: Largest value.
        log: Sample on a log scale (learning rates, weight decay).
        step: Only multiples of this above ``low``.
        integer: Integer values (``suggest_int``).
    """

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False


@dataclass
class SweepSpec:
    """One sweep, as read from its file: the part that must stay the same for a study to continue."""

    name: str
    base: list[str]
    set: dict[str, Any]
    grid: dict[str, list[Any]] | None
    search: dict[str, Any] | None
    metric: str
    direction: str
    n_trials: int | None
    sampler: dict[str, Any] | None
    pruner: dict[str, Any] | None
    test: bool
    keys: list[str] = field(default_factory=list)  # the swept keys, in command-line order

    @property
    def is_grid(self) -> bool:
        return self.grid is not None

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid, the first key varying slowest."""
        assert self.grid is not None
        return [dict(zip(self.keys, values)) for values in itertools.product(*(self.grid[k] for k in self.keys))]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """The trial's values of the swept keys (a queued grid point, or the sampler's choice)."""
        params = {}
        for key in self.keys:
            if self.grid is not None:
                params[key] = trial.suggest_categorical(key, self.grid[key])
                continue
            dim = self.search[key]
            if isinstance(dim, list):
                params[key] = trial.suggest_categorical(key, dim)
            elif dim["integer"]:
                params[key] = trial.suggest_int(
                    key, int(dim["low"]), int(dim["high"]), step=int(dim["step"] or 1), log=dim["log"]
                )
            else:
                params[key] = trial.suggest_float(key, dim["low"], dim["high"], step=dim["step"], log=dim["log"])
        return params

    def stored(self) -> dict[str, Any]:
        """What the study keeps (JSON): everything but the trial budget, which may grow."""
        data = asdict(self)
        data.pop("n_trials")
        return json.loads(json.dumps(data))

    def differences(self, stored: dict[str, Any]) -> list[str]:
        """Fields in which this file differs from the sweep a study was created with (grid additions allowed)."""
        mine = self.stored()
        diffs = []
        for key in sorted(set(mine) | set(stored)):
            if key in ("grid", "keys") and self.is_grid and stored.get("grid") is not None:
                old, new = stored["grid"], mine["grid"]
                if set(old) != set(new) or any(v not in new[k] for k, vs in old.items() for v in vs):
                    diffs.append("grid (values may be added, not removed or renamed)")
            elif key not in ("keys", "sampler", "pruner") and mine.get(key) != stored.get(key):
                diffs.append(key)
        return list(dict.fromkeys(diffs))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m mobilenet_lab sweep",
        exit_on_error=False,
        description="Train many variants of one config: a grid, or a search by Optuna's samplers, with pruning. "
        "Each trial is an ordinary fit (its own lightning_logs/<sweep>/trial_NNN and checkpoints); "
        "the study lives in a database, so a killed sweep continues when the same command runs again "
        "and workers on other machines join with the same command and --storage. Arguments after "
        "`--` go to every trial's fit command (e.g. -- --data.data_dir /path/to/datasets). Exits with "
        "status 1 when trials failed.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="the sweep file (configs/sweeps/*.yaml)")
    parser.add_argument(
        "--name",
        type=str | None,
        default=None,
        help="sweep (study) name; default: the sweep file's name without .yaml",
    )
    parser.add_argument(
        "--base", type=list[str], default=[], help="training config files of every trial, in order (as fit's --config)"
    )
    parser.add_argument(
        "--set",
        type=dict[str, Any],
        default={},
        help="fixed settings of every trial, dotted keys as on the fit command line",
    )
    parser.add_argument(
        "--grid",
        type=dict[str, list[Value]] | None,
        default=None,
        help="key -> list of values: every combination is one trial",
    )
    parser.add_argument(
        "--search",
        type=dict[str, Range | list[Value]] | None,
        default=None,
        help="key -> {low, high, log, step, integer} or a list of choices, sampled by --sampler",
    )
    parser.add_argument("--metric", type=str, default="val/acc", help="validation metric that ranks trials")
    parser.add_argument(
        "--direction",
        type=Literal["maximize", "minimize"],
        default="maximize",
        help="maximize (accuracy) or minimize (loss) the metric",
    )
    parser.add_argument(
        "--n_trials",
        type=int | None,
        default=None,
        help="trials of a search, over all workers (a grid runs each point once)",
    )
    parser.add_argument(
        "--sampler",
        type=optuna.samplers.BaseSampler | None,
        default=None,
        help="Optuna sampler of a search (default TPESampler), e.g. {class_path: RandomSampler}",
    )
    parser.add_argument(
        "--pruner",
        type=optuna.pruners.BasePruner | None,
        default=None,
        help="Optuna pruner that stops weak trials early, e.g. {class_path: MedianPruner} (default: none)",
    )
    parser.add_argument(
        "--test", type=bool, default=False, help="also test each finished trial's last.ckpt (test/acc in the report)"
    )
    parser.add_argument(
        "--storage",
        type=str | None,
        default=None,
        help="Optuna storage URL; default sqlite:///sweeps/<name>.db. For workers on several machines "
        "use a PostgreSQL server, postgresql://user:password@host/db (pip install -e "
        '".[postgres]")',
    )
    parser.add_argument(
        "--root",
        type=str | None,
        default=None,
        help="folder of every trial's logs and checkpoints (<root>/lightning_logs, "
        "<root>/checkpoints) instead of the fit config's; on several machines a shared "
        "file system path mounted on each, so a trial cut off on one machine resumes on "
        "another from its last.ckpt",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="trials at once on this machine (one GPU each when there are GPUs)"
    )
    return parser


def parse(argv: list[str]) -> tuple[SweepSpec, Namespace]:
    """The sweep spec and the parsed command line (storage, workers), or one line saying what is wrong."""
    parser = build_parser()
    try:
        cfg = parser.parse_args(argv)
    except Exception as err:  # noqa: BLE001 - jsonargparse's ArgumentError and type errors
        given_file = any(a in ("--config", "-c") or a.startswith("--config=") for a in argv)
        message = one_line(err)
        if message.startswith("--base") and not given_file:  # a list option: the common slip on the command line
            message += " (on the command line a list is --base '[configs/a.yaml]' or --base+ configs/a.yaml)"
        raise UserError(f"{'sweep file' if given_file else 'sweep option'} {message}") from None
    files = [Path(str(p)) for p in (cfg.config or []) if p is not None]
    name = cfg.name or (files[-1].name.rsplit(".", 1)[0] if files else None)
    if not name:
        raise UserError("the sweep needs a name: give --config configs/sweeps/<name>.yaml or --name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise UserError(f"sweep name {name!r}: use letters, digits, '_', '-' and '.' (it names files and folders)")
    if not cfg.base:
        raise UserError("sweep file: base is empty; name the training config(s), e.g. base: [configs/quickstart.yaml]")
    for path in cfg.base:
        if not Path(path).is_file():
            raise UserError(
                f"sweep file: base config {path} does not exist (paths are relative to the folder the sweep runs in)"
            )
    if (cfg.grid is None) == (cfg.search is None):
        raise UserError(
            "sweep file: give either a grid (every combination) or a search (sampled), "
            + ("not both" if cfg.grid is not None else "neither was given")
        )
    space = cfg.grid if cfg.grid is not None else cfg.search
    if not space:
        raise UserError(
            f"sweep file: the {'grid' if cfg.grid is not None else 'search'} is empty; "
            "give at least one key, e.g. model.init_args.width_mult: [0.25, 0.5]"
        )
    for key, dim in space.items():
        _check_dimension(key, dim)
        if key in cfg.set:
            raise UserError(f"sweep file: {key} is both swept and fixed in set; keep one")
    if cfg.grid is not None and cfg.n_trials is not None:
        raise UserError(
            f"sweep file: n_trials is for a search; a grid runs each of its "
            f"{_grid_size(cfg.grid)} points once (remove n_trials)"
        )
    if cfg.grid is not None and cfg.sampler is not None:
        raise UserError("sweep file: a grid runs every point and needs no sampler (remove sampler)")
    if cfg.search is not None and (cfg.n_trials is None or cfg.n_trials < 1):
        raise UserError("sweep file: a search needs n_trials >= 1 (how many trials over all workers)")
    if cfg.workers < 1:
        raise UserError(f"--workers must be >= 1, got {cfg.workers}")
    dump = parser.dump(cfg, skip_none=False, format="json_indented")  # class_path/init_args as plain data
    plain = json.loads(dump)
    keys = sorted(space, key=lambda k: (not _selects_class(k), list(space).index(k)))
    spec = SweepSpec(
        name=name,
        base=[str(p) for p in cfg.base],
        set=dict(plain["set"]),
        grid=plain["grid"],
        search=plain["search"],
        metric=cfg.metric,
        direction=cfg.direction,
        n_trials=cfg.n_trials,
        sampler=plain["sampler"],
        pruner=plain["pruner"],
        test=cfg.test,
        keys=keys,
    )
    return spec, cfg


def _grid_size(grid: dict[str, list[Any]]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def _selects_class(key: str) -> bool:
    # A class choice goes first on the command line: the options after it are the new class's.
    return key.endswith("class_path") or "." not in key


def _check_dimension(key: str, dim: Any) -> None:
    if isinstance(dim, list):
        if not dim:
            raise UserError(f"sweep file: {key} has no values; list at least one")
        if len({json.dumps(v) for v in dim}) != len(dim):
            raise UserError(f"sweep file: {key} lists a value twice: {dim}")
        return
    if not dim.low < dim.high:
        raise UserError(f"sweep file: {key} needs low < high, got low={dim.low} high={dim.high}")
    if dim.log and dim.low <= 0:
        raise UserError(f"sweep file: {key} is log-scaled and needs low > 0, got {dim.low}")
    if dim.log and dim.step is not None:
        raise UserError(f"sweep file: {key} cannot have both log and step (Optuna samples one or the other)")
    if dim.integer and any(v is not None and float(v) != int(v) for v in (dim.low, dim.high, dim.step)):
        raise UserError(f"sweep file: {key} is integer and needs whole low/high/step")


# --------------------------------------------------------------------------- optuna objects
def _instantiate(kind: str, spec: dict[str, Any] | None) -> Any:
    """An Optuna sampler or pruner from its stored {class_path, init_args} (jsonargparse builds it)."""
    if spec is None:
        return None
    base = optuna.samplers.BaseSampler if kind == "sampler" else optuna.pruners.BasePruner
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(f"--{kind}", type=base)
    return parser.instantiate_classes(parser.parse_object({kind: spec}))[kind]


def build_sampler(spec: SweepSpec | dict[str, Any]) -> Any:
    sampler = spec.sampler if isinstance(spec, SweepSpec) else spec.get("sampler")
    return _instantiate("sampler", sampler)


def build_pruner(spec: SweepSpec | dict[str, Any]) -> Any:
    """The sweep's pruner; Optuna's ``NopPruner`` when the file names none (no pruning)."""
    pruner = spec.pruner if isinstance(spec, SweepSpec) else spec.get("pruner")
    return _instantiate("pruner", pruner) or optuna.pruners.NopPruner()
