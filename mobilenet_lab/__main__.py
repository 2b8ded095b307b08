"""``python -m mobilenet_lab <command>``: trainer subcommands go to the LightningCLI, tools to tools/.

    fit | validate | test | predict    the LightningCLI (``--help`` on each)
    summary | benchmark | report | export   tools (``--help`` on each)

Errors the user can fix print one line (``error: ...``) and exit with status 2; ``--debug`` or
``MOBILENET_LAB_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

TOOLS = {
    "summary": "mobilenet_lab.tools.summary",
    "benchmark": "mobilenet_lab.tools.benchmark",
    "report": "mobilenet_lab.tools.report",
    "export": "mobilenet_lab.tools.export",
}


def _friendly(err: BaseException) -> str | None:
    """The one-line message for errors a user can fix, or None for a real bug."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from .errors import UserError

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
    from .errors import TrainingInterrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MOBILENET_LAB_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        if argv and argv[0] in TOOLS:
            importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
        else:
            from .cli import cli_main

            sys.argv = [sys.argv[0], *argv]  # LightningCLI reads sys.argv (without --debug)
            cli_main()
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
