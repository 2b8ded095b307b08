"""The commands a sweep runs for each trial: ``fit`` (and ``test``) command lines, checked first by fit's own parser.

Values are written as the fit command line reads them back (YAML); :func:`check_points` parses the
sweep's points with the training CLI itself, without training, so a bad key or value is one line
before anything runs. :func:`last_error` reads a finished command's one-line error from its output.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

from ...errors import UserError
from ..arguments import jsonargparse_message
from .spec import SweepSpec

__all__ = [
    "trial_name",
    "cli_value",
    "trial_arguments",
    "fit_command",
    "test_command",
    "check_points",
    "shown",
    "short",
    "last_error",
]


def trial_name(number: int) -> str:
    """A trial's run folder name (its logger version): ``trial_007``."""
    return f"trial_{number:03d}"


def cli_value(value: Any) -> str:
    """A value as the fit command line reads it back (YAML): true/false/null, numbers, JSON for containers."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        text = repr(value)
        mantissa, _, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else text  # YAML 1.1 floats
    return json.dumps(value)


def trial_arguments(spec: SweepSpec, params: dict[str, Any], extra: list[str]) -> list[str]:
    """fit's arguments for one trial, before the sweep's own logger/callback settings."""
    args = [f"--config={path}" for path in spec.base]
    args += [f"--{key}={cli_value(value)}" for key, value in spec.set.items()]
    args += list(extra)
    args += [f"--{key}={cli_value(params[key])}" for key in spec.keys]
    return args


def check_points(spec: SweepSpec, extra: list[str]) -> dict[str, Any]:
    """Parses fit's command line for the sweep's points without training (unknown keys, bad values).

    Checks every grid point of a small grid, else one point per value of each key (others at
    their first value); a search is checked at its bounds and choices. Returns the config of
    the first point (where its logs and checkpoints go).
    """
    from ...cli import MobileNetCLI

    class ParseOnly(MobileNetCLI):
        def instantiate_classes(self) -> None:  # parse and check; build nothing
            pass

    def values(key: str) -> list[Any]:
        if spec.grid is not None:
            return spec.grid[key]
        dim = spec.search[key]
        if isinstance(dim, list):
            return dim
        low, high = dim["low"], dim["high"]
        return [int(low), int(high)] if dim["integer"] else [low, high]

    first = {k: values(k)[0] for k in spec.keys}
    if spec.grid is not None and len(spec.grid_points()) <= 24:
        points = spec.grid_points()
    else:
        points = [first] + [{**first, k: v} for k in spec.keys for v in values(k)[1:]]
    config = None
    lightning_log = logging.getLogger("lightning.fabric.utilities.seed")
    level = lightning_log.level
    lightning_log.setLevel(logging.WARNING)  # "Seed set to 0" once per parse
    try:
        for point in points:
            args = trial_arguments(spec, point, extra)
            try:
                with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
                    cli = ParseOnly(args=args, run=False, parser_kwargs={"exit_on_error": False})
            except UserError as err:
                raise UserError(f"sweep point {_describe(point)}: {err}") from None
            except Exception as err:  # noqa: BLE001 - jsonargparse's ArgumentError: unknown key, bad type
                raise UserError(f"sweep point {_describe(point)}: {jsonargparse_message(err)}") from None
            if config is None:
                config = cli.config
    finally:
        lightning_log.setLevel(level)
    return config


def _describe(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items())


def fit_command(
    spec: SweepSpec, params: dict[str, Any], number: int, extra: list[str], resume: str | None = None
) -> list[str]:
    """Trial ``number``'s fit: the sweep's configs and values, its run folder, the :class:`SweepTrial` callback."""
    callback = {
        "class_path": "mobilenet_lab.tools.sweep.trial.SweepTrial",
        "init_args": {"sweep": spec.name, "trial": number},
    }
    return [
        sys.executable,
        "-m",
        "mobilenet_lab",
        "fit",
        *trial_arguments(spec, params, extra),
        f"--trainer.logger.init_args.name={spec.name}",
        f"--trainer.logger.init_args.version={trial_name(number)}",
        "--trainer.logger.init_args.default_hp_metric=false",  # SweepTrial writes the HParams summary
        f"--trainer.callbacks+={cli_value(callback)}",
        *([f"--ckpt_path={resume}"] if resume else []),
    ]


def test_command(log_dir: Path, checkpoint_dir: Path, number: int) -> list[str]:
    """Tests the trial's last.ckpt with its config.yaml (all the fit was given); logs to ``trial_NNN_test``."""
    return [
        sys.executable,
        "-m",
        "mobilenet_lab",
        "test",
        f"--config={log_dir / 'config.yaml'}",
        f"--ckpt_path={checkpoint_dir / 'last.ckpt'}",
        f"--trainer.logger.init_args.version={trial_name(number)}_test",
    ]


def short(text: str) -> str:
    """``model.init_args.width_mult`` -> ``width_mult``; ``mobilenet_lab.MobileNetV3Small`` -> ``MobileNetV3Small``."""
    text = str(text)
    if "." in text and not text.replace(".", "").replace("-", "").replace("e", "").isdigit():
        return text.rsplit(".", 1)[-1]
    return text


def shown(command: list[str]) -> str:
    """The command as the user would type it (``python -m mobilenet_lab ...``)."""
    args = list(command)
    if args[:3] == [sys.executable, "-m", "mobilenet_lab"]:
        args = ["python", "-m", "mobilenet_lab", *args[3:]]
    return shlex.join(args)


def last_error(path: Path, code: int) -> str:
    """The fit's one-line error (``error: ...``), else the last line of its output; a kill names its signal."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    text = errors[-1] if errors else (lines[-1] if lines else "no output")
    if code < 0:
        text = f"killed by {signal.Signals(-code).name} (out of memory?); last output: {text}"
    return text[:300]
