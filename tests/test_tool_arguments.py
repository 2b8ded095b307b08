"""The tools' command lines (summary, benchmark, report, export) on jsonargparse.

A YAML file given as ``--config`` holds the same options as the flags, ``--print_config`` writes
that file, space-separated lists still parse, and a bad value is one line naming its flag.
Everything here parses only (no model is measured or exported), except the summary table.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mobilenet_lab.__main__ import main as cli
from mobilenet_lab.errors import UserError
from mobilenet_lab.tools import arguments, report, summary
from mobilenet_lab.tools.benchmark import cli as benchmark_cli
from mobilenet_lab.tools.export import cli as export_cli

# tool -> (a function from argv to the parsed options, flags a user types today)
TOOLS = {
    "summary": (
        lambda argv: arguments.parse(summary.build_parser(), argv),
        [
            "--models",
            "mobilenet_v1",
            "mobilenet_v3_small",
            "--widths",
            "0.25",
            "0.5",
            "--image_size",
            "32",
            "--num_classes",
            "100",
            "--stem",
            "cifar",
        ],
    ),
    "benchmark": (
        benchmark_cli.parse_args,
        [
            "--models",
            "mobilenet_v2",
            "mobilenet_v3_small",
            "--widths",
            "0.5",
            "1.0",
            "--devices",
            "cpu",
            "--image_sizes",
            "32",
            "64",
            "--runs",
            "7",
            "--warmup",
            "0",
            "--batch_size",
            "0",
            "--channels_last",
            "off",
            "--no_reference",
            "--quiet",
            "--out",
            "elsewhere",
        ],
    ),
    "report": (
        lambda argv: arguments.parse(report.build_parser(), argv),
        ["--logdir", "runs", "--out", "tables", "--benchmark_csv", "b.csv", "--quiet"],
    ),
    "export": (
        lambda argv: arguments.parse(export_cli.build_parser(), argv),
        [
            "--ckpt_path",
            "a/last.ckpt",
            "--format",
            "executorch",
            "--quantize",
            "int8",
            "--opset",
            "18",
            "--calibration_images",
            "64",
            "--eval_images",
            "100",
            "--runs",
            "5",
            "--threads",
            "1",
        ],
    ),
}


def _options(namespace) -> dict:
    """The parsed options as a dict, without the config files they came from."""
    options = namespace.as_dict()
    options.pop("config", None)
    return options


@pytest.mark.parametrize("tool", list(TOOLS))
def test_print_config_writes_the_yaml_that_config_reads_back(tool, tmp_path, capsys, monkeypatch):
    parse, flags = TOOLS[tool]
    monkeypatch.chdir(tmp_path)  # report's --benchmark_csv must exist to parse: make it here
    Path("b.csv").write_text("model\n")
    from_flags = _options(parse(flags))
    with pytest.raises(SystemExit) as exc:
        parse([*flags, "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert "config" not in printed
    # every flag given is in the YAML with its typed value (lists as lists, numbers as numbers)
    for key, value in from_flags.items():
        assert printed[key] == (str(value) if isinstance(value, Path) else value), key
    config = tmp_path / f"{tool}.yaml"
    config.write_text(yaml.safe_dump(printed))
    assert _options(parse(["--config", str(config)])) == from_flags
    # flags after --config override it
    override = {
        "summary": ["--widths", "2"],
        "benchmark": ["--widths", "2"],
        "report": ["--logdir", "x"],
        "export": ["--runs", "9"],
    }[tool]
    overridden = _options(parse(["--config", str(config), *override]))
    key = override[0][2:]
    assert overridden[key] != from_flags[key] and {k: v for k, v in overridden.items() if k != key} == {
        k: v for k, v in from_flags.items() if k != key
    }
    # the defaults round-trip too (nulls of optional options, 'on' that YAML would read as true)
    minimal = ["--ckpt_path", "c.ckpt"] if tool == "export" else []
    with pytest.raises(SystemExit):
        parse([*minimal, "--print_config"])
    config.write_text(capsys.readouterr().out)
    assert _options(parse(["--config", str(config)])) == _options(parse(minimal))


def test_space_separated_lists_keep_their_types():
    options = TOOLS["benchmark"][0](TOOLS["benchmark"][1])
    assert options.models == ["mobilenet_v2", "mobilenet_v3_small"]
    assert options.widths == [0.5, 1.0] and all(isinstance(w, float) for w in options.widths)
    assert options.image_sizes == [32, 64] and all(isinstance(s, int) for s in options.image_sizes)
    assert options.runs == 7 and options.warmup == 0 and options.channels_last == "off" and options.quiet is True
    assert options.out == Path("elsewhere") and options.report_csv is None
    defaults = benchmark_cli.parse_args(["--stem", "imagenet"])
    assert defaults.image_sizes == [224] and defaults.widths == [0.25, 0.5, 0.75, 1.0] and defaults.quiet is False
    assert summary.build_parser().parse_args(["--widths", "0.5", "1"]).widths == [0.5, 1.0]


def test_summary_from_a_config_file_prints_the_same_table(tmp_path, capsys):
    flags = [
        "--models",
        "mobilenet_v1",
        "--widths",
        "0.25",
        "0.5",
        "--image_size",
        "32",
        "--stem",
        "cifar",
        "--num_classes",
        "10",
    ]
    summary.main(flags)
    table = capsys.readouterr().out
    assert table.count("| mobilenet_v1 |") == 2 and "| 32x32 |" in table
    config = tmp_path / "summary.yaml"
    config.write_text("models: [mobilenet_v1]\nwidths: [0.25, 0.5]\nimage_size: 32\nstem: cifar\nnum_classes: 10\n")
    summary.main(["--config", str(config)])
    assert capsys.readouterr().out == table


@pytest.mark.parametrize(
    "argv,line",
    [
        (["summary", "--widths", "0.5", "-1"], "error: --widths must be > 0, got -1"),
        (["summary", "--image_size", "4"], "error: --image_size must be >= 8, got 4"),
        (["benchmark", "--widths", "-1"], "error: --widths must be > 0, got -1"),
        (["benchmark", "--threads", "0"], "error: --threads must be > 0, got 0"),
        (["benchmark", "--warmup", "-2"], "error: --warmup must be >= 0, got -2"),
        (["benchmark", "--widths", "inf"], "error: --widths must be finite, got inf"),
        (["report", "--sweep"], "error: argument --sweep: expected one argument"),
        (["export", "--ckpt_path", "c.ckpt", "--opset", "17"], "error: --opset must be >= 18, got 17"),
        (["export", "--ckpt_path", "c.ckpt", "--runs", "4"], "error: --runs must be >= 5, got 4"),
        (["export", "--ckpt_path", "c.ckpt", "--eval_images", "0"], "error: --eval_images must be > 0, got 0"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(argv, line, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n" and captured.out == ""


def test_bad_config_file_values_are_one_line_too(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("widths: [0.5, -1]\n")
    with pytest.raises(UserError, match=r"^--widths must be > 0, got -1$"):
        summary.main(["--config", str(config)])
    config.write_text("stem: nope\n")
    with pytest.raises(UserError, match=r"^--stem: 'nope' not among choices"):
        summary.main(["--config", str(config)])
    config.write_text("width: [0.5]\n")  # a misspelt key
    with pytest.raises(UserError, match="width"):
        summary.main(["--config", str(config)])
    with pytest.raises(UserError, match="^--config: File does not exist"):
        summary.main(["--config", str(tmp_path / "missing.yaml")])
