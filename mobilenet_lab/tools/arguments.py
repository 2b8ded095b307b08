"""The tools' command lines (summary, benchmark, report, export), on jsonargparse like the trainer's.

Each tool builds its parser with :func:`tool_parser`: typed arguments (``jsonargparse.typing``'s
restricted numbers, ``Literal``, choices), ``--help`` with the types and defaults, ``--config``
(a YAML file holding any of the options, as ``--print_config`` writes it) and ``--print_config``.
Lists keep their space-separated form (``--widths 0.5 1.0``): jsonargparse's ``ArgumentParser``
is argparse's, so ``nargs="+"`` works with a typed element.

:func:`parse` turns jsonargparse's multi-line errors into one :class:`~mobilenet_lab.errors.UserError`
line naming the flag (``--widths must be > 0, got -1``); ``python -m mobilenet_lab`` prints it as
``error: ...`` and exits with status 2, like every other mistake a user can fix.
"""

from __future__ import annotations

import argparse
import re

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace
from jsonargparse.typing import restricted_number_type

from ..errors import UserError

__all__ = ["ImageSize", "tool_parser", "parse", "one_line", "jsonargparse_message"]

#: An input side in pixels: below 8 the networks' strides leave nothing to pool.
ImageSize = restricted_number_type("ImageSize", int, (">=", 8), docstring="an image side of at least 8 pixels")


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help (types, defaults, config options) keeping the description's own line breaks."""


def tool_parser(prog: str, description: str | None) -> ArgumentParser:
    """A tool's parser with ``--config`` (YAML of the options) and ``--print_config``; errors are raised, not printed."""
    parser = ArgumentParser(prog=prog, description=description, formatter_class=_HelpFormatter, exit_on_error=False)
    parser.add_argument(
        "--config",
        action=ActionConfigFile,
        help="YAML file of options (keys as the flags without --, e.g. widths: [0.5, 1.0]); "
        "later flags override it; --print_config writes one",
    )
    return parser


def parse(parser: ArgumentParser, argv: list[str] | None) -> Namespace:
    """The parsed options, or one line (a :class:`UserError`) naming the flag that is wrong."""
    try:
        return parser.parse_args(argv)
    except argparse.ArgumentError as err:
        raise UserError(one_line(err)) from None


def jsonargparse_message(err: BaseException) -> str:
    """jsonargparse's multi-line message as one line: the first line and the innermost reason."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    first = lines[0].rstrip(":")
    for i, line in enumerate(lines[1:], start=1):
        if line.startswith("- ") and "NoneType" not in line:
            reason = line[2:]
            if reason.endswith(":") and i + 1 < len(lines):  # "Problem with class X:" then the detail
                reason = f"{reason} {lines[i + 1].lstrip('- ')}"
            return f"{first}: {reason}"
    return first


_KEY = re.compile(r'Parser key "([^"]+)"(?: element \d+)?:?')
_RESTRICTION = re.compile(r"(?:: (\S+) )?does not conform to restriction v\s*([<>=!]+)\s*(\S+)")


def one_line(err: BaseException) -> str:
    """A command-line error as one line that names the flag: ``--widths must be > 0, got -1``."""
    text = str(err).strip()
    key = _KEY.match(text)
    if not key:  # argparse's own ("argument --models: invalid choice ...", "unrecognized arguments ...")
        return jsonargparse_message(err)
    flag = f"--{key.group(1)}"
    restriction = _RESTRICTION.search(text)
    if restriction:  # a restricted number type (PositiveInt, ImageSize ...) refused the value
        given = restriction.group(1) or (re.findall(r"Given value: (.*)", text) or ["?"])[-1]
        return f"{flag} must be {restriction.group(2)} {restriction.group(3)}, got {given}"
    lines = [line.strip() for line in text[key.end() :].strip().splitlines() if line.strip()] or ["invalid value"]
    reasons = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
    return f"{flag}: {(reasons or lines)[0]}".replace(". Got value:", ", got")
