"""``python -m mobilenet_lab <command>`` (or ``mobilenet-lab <command>``): one entry point for every command.

Trainer commands (fit, validate, test, predict) go to the LightningCLI, tools (summary, benchmark,
report, sweep, export) to tools/; :data:`COMMANDS` lists them all, and the top-level help reads it.

Errors the user can fix print one line (``error: ...``) and exit with status 2; ``--debug`` or
``MOBILENET_LAB_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

CLI = "mobilenet_lab.cli"

# The one list of commands: name -> (module that runs it, one-line description for the help).
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": (CLI, "train a model; writes logs, config.yaml and checkpoints, one folder per run"),
    "validate": (CLI, "evaluate a checkpoint on the validation split"),
    "test": (CLI, "evaluate a checkpoint on the test set (accuracy, sample grid, confusion matrix)"),
    "predict": (CLI, "classify a folder of images (--data.predict_dir) into predictions.csv"),
    "summary": ("mobilenet_lab.tools.summary", "parameters and multiply-adds of each model and width"),
    "benchmark": ("mobilenet_lab.tools.benchmark", "latency and throughput of each model and width, table and chart"),
    "report": ("mobilenet_lab.tools.report", "results table of finished runs, read from their logs"),
    "sweep": (
        "mobilenet_lab.tools.sweep",
        "grid or search over config values with Optuna; resumable, on many machines",
    ),
    "export": ("mobilenet_lab.tools.export", "export a checkpoint to ONNX or ExecuTorch, optionally int8"),
}
TOOLS = {name: module for name, (module, _) in COMMANDS.items() if module != CLI}


def program_name() -> str:
    """How the user called us: ``mobilenet-lab`` (the console script) or ``python -m mobilenet_lab``."""
    called = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    return called if called.startswith("mobilenet-lab") else "python -m mobilenet_lab"


def usage() -> str:
    """The top-level help: every command with its one-line description."""
    prog = program_name()
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: {prog} <command> [options]",
        "",
        "Train, evaluate, benchmark and export MobileNets (V1, V2, V3-Small/Large, V4 conv-S/M/L) on CIFAR-100.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()),
        "",
        f"`{prog} <command> --help` lists a command's options; --debug shows the traceback of an error.",
    ]
    return "\n".join(lines)


def _friendly(err: BaseException) -> str | None:
    """The one-line message for errors a user can fix, or None for a real bug."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from .errors import UserError

    cause = err.__cause__
    while cause is not None and not isinstance(cause, UserError):
        cause = cause.__cause__
    if cause is not None:  # jsonargparse wraps what a class refused while it was being built
        err = cause
    if isinstance(err, MisconfigurationException) and "gpu backend" in str(err).lower():
        return "a GPU was asked for but none is available here: use --trainer.accelerator cpu"
    if isinstance(err, (UserError, MisconfigurationException)):
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if isinstance(err, FloatingPointError):
        return f"training stopped: {err}; the last good checkpoint is kept (lower the learning rate, then resume)"
    if isinstance(err, RuntimeError) and "CUDA out of memory" in str(err):
        return "the GPU ran out of memory: lower data.batch_size or use trainer.precision bf16-mixed"
    return None


def main(argv: list[str] | None = None) -> None:
    from .errors import TrainingInterrupted, UserError

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MOBILENET_LAB_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    try:
        command = argv[0]
        if command in TOOLS:
            importlib.import_module(TOOLS[command]).main(argv[1:])
        elif command in COMMANDS or command.startswith("-"):  # options first: LightningCLI's -c/--print_config
            from .cli import cli_main

            sys.argv = [sys.argv[0], *argv]  # LightningCLI reads sys.argv (without --debug)
            descriptions = {name: {"description": text} for name, (module, text) in COMMANDS.items() if module == CLI}
            cli_main(parser_kwargs={"prog": program_name(), **descriptions})
        else:
            raise UserError(
                f"unknown command {command!r}; the commands are {', '.join(COMMANDS)} "
                f"(`{program_name()} --help` describes each)"
            )
    except TrainingInterrupted as err:
        for child in err.children:  # the other ranks, started by this one: they exit right after saving
            try:
                child.wait(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
        if err.global_rank == 0:
            print(f"stopped: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001 - every user-fixable error becomes one line
        message = _friendly(err)
        if debug or message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
