"""The benchmark tool at a tiny sweep: files, columns, sane numbers, torchvision reference, errors."""

import csv
from pathlib import Path

import pytest
import torch

from mobilenet_lab.__main__ import main as cli
from mobilenet_lab.errors import UserError
from mobilenet_lab.models import convert_torchvision_state_dict, count_macs, count_params, create_model
from mobilenet_lab.tools import benchmark

TINY = [
    "--widths",
    "0.25",
    "--image_sizes",
    "32",
    "--runs",
    "5",
    "--warmup",
    "1",
    "--batch_runs",
    "2",
    "--batch_warmup",
    "1",
    "--batch_size",
    "8",
    "--train_batch_size",
    "4",
    "--threads",
    "1",
    "--quiet",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rows = benchmark.main(["--models", "mobilenet_v2", "mobilenet_v3_small", *TINY, "--out", str(out)])
    return out, rows


def test_writes_md_csv_png_with_expected_columns(tiny_run):
    out, rows = tiny_run
    for name in ("benchmark.md", "benchmark.csv", "benchmark.png"):
        assert (out / name).stat().st_size > 0
    with open(out / "benchmark.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == benchmark.COLUMNS + benchmark.HARDWARE_COLUMNS
    # V2 has a torchvision counterpart at every width, V3-Small only at width 1.0.
    assert [(r["model"], r["impl"]) for r in table] == [
        ("mobilenet_v2", "ours"),
        ("mobilenet_v2", "torchvision"),
        ("mobilenet_v3_small", "ours"),
    ]
    md = (out / "benchmark.md").read_text()
    assert "| model" in md and "latency_p90_ms" in md and "CPU:" in md and torch.__version__ in md
    assert table[0]["cpu"] and table[0]["threads"] == "1" and table[0]["torch"] == torch.__version__
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_numbers_are_sane_and_counts_exact(tiny_run):
    _, rows = tiny_run
    for r in rows:
        # Batch-1 latency of a 0.25-width network at 32x32 on one thread: well under a second.
        assert 0 < r["latency_ms"] < 1000 and 0 < r["latency_p90_ms"] < 1000
        assert r["infer_img_s"] > 0 and r["train_img_s"] > 0
        model = create_model(r["model"], width_mult=r["width"], num_classes=100, stem="cifar")
        assert r["params"] == count_params(model)
        assert r["MACs"] == count_macs(model, 32)
    ours, ref = rows[0], rows[1]
    assert ref["impl"] == "torchvision" and ref["params"] == ours["params"] and ref["MACs"] == ours["MACs"]
    assert ours["latency_vs_torchvision"] == pytest.approx(ours["latency_ms"] / ref["latency_ms"])


@pytest.mark.parametrize(
    "name,width", [("mobilenet_v2", 0.5), ("mobilenet_v3_small", 1.0), ("mobilenet_v3_large", 1.0)]
)
@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_torchvision_reference_is_the_same_function(name, width, stem):
    ref = benchmark.torchvision_reference(name, width, 100, stem).eval()
    ours = create_model(name, width_mult=width, num_classes=100, stem=stem).eval()
    ours.load_state_dict(convert_torchvision_state_dict(name, ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))


def test_no_reference_where_width_semantics_differ():
    assert benchmark.torchvision_reference("mobilenet_v1", 1.0, 100, "cifar") is None
    assert benchmark.torchvision_reference("mobilenet_v3_large", 0.75, 100, "cifar") is None


def test_table_reports_what_the_clock_measured(tmp_path, monkeypatch):
    """With a clock that advances 2 ms per call, every figure is exact: latency 2 ms, images/s = batch / 2 ms."""
    from mobilenet_lab.tools import timing
    from mobilenet_lab.tools.benchmark import measure

    now = [0.0]
    monkeypatch.setattr(timing, "_clock", lambda: now[0])
    real_inference_fn = measure._inference_fn

    def advancing(fn):
        def run():
            fn()
            now[0] += 0.002

        return run

    monkeypatch.setattr(measure, "_inference_fn", lambda m, x: advancing(real_inference_fn(m, x)))
    monkeypatch.setattr(measure, "train_step", lambda m, batches: advancing(lambda: None))
    rows = benchmark.main(["--models", "mobilenet_v1", *TINY, "--out", str(tmp_path)])
    (row,) = rows
    assert row["latency_ms"] == pytest.approx(2.0) and row["latency_p90_ms"] == pytest.approx(2.0)
    assert row["infer_img_s"] == pytest.approx(8 / 0.002) and row["train_img_s"] == pytest.approx(4 / 0.002)
    row_line = (tmp_path / "benchmark.md").read_text().splitlines()[-1]
    assert [cell.strip() for cell in row_line.split("|")][9:13] == ["2.00", "2.00", "4,000", "2,000"]


def test_report_csv_adds_accuracy_panel(tmp_path):
    report = tmp_path / "report.csv"
    report.write_text("run,model,width,stem,image_size,best_val_acc\nm/version_0,mobilenet_v1,0.25,cifar,32,0.4\n")
    assert benchmark.read_accuracy(report) == {("mobilenet_v1", 0.25, "cifar", 32): 0.4}
    rows = [
        {
            "model": "mobilenet_v1",
            "width": 0.25,
            "impl": "ours",
            "stem": "cifar",
            "image_size": 32,
            "device": "cpu",
            "MACs": 1e6,
            "latency_ms": 2.0,
        }
    ]
    benchmark.plot(rows, tmp_path / "b.png", benchmark.read_accuracy(report))
    assert (tmp_path / "b.png").stat().st_size > 0


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--widths", "0"], "must be > 0"),
        (["--widths", "-1"], "must be > 0"),
        (["--models", "resnet50"], "invalid choice"),
        (["--image_sizes", "4"], "--image_sizes must be >= 8"),
        (["--channels_last", "maybe"], "invalid choice"),
    ],
)
def test_bad_arguments_are_one_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(["benchmark", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_only_without_cuda_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="no CUDA device"):
        benchmark.main(["--devices", "cuda", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        cli(["benchmark", "--devices", "cuda", "--out", str(tmp_path)])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("error: --devices cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_beside_cpu_is_skipped_with_a_note(capsys):
    from mobilenet_lab.tools.benchmark import measure

    assert measure._devices(["cpu", "cuda"]) == ["cpu"]
    assert "skipping --devices cuda" in capsys.readouterr().err


# ------------------------------------------------------------------ the bare loop and fit, as every script times them
def test_bare_step_trains_the_model_on_each_batch_in_turn():
    from mobilenet_lab.tools.benchmark.loops import random_batches, train_step

    torch.manual_seed(0)
    model = create_model("mobilenet_v1", width_mult=0.25, num_classes=10, stem="cifar").train()
    batches = random_batches(2, 4, 16, 10, channels_last=True)
    assert (
        [x.shape for x, _ in batches] == [(4, 3, 16, 16)] * 2
        and batches[0][0].is_contiguous(memory_format=torch.channels_last)
        and all(int(y.max()) < 10 for _, y in batches)
    )
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[0].data_ptr()))
    before = [p.detach().clone() for p in model.parameters()]
    step = train_step(model, batches)
    for _ in range(3):
        step()
    assert seen == [batches[0][0].data_ptr(), batches[1][0].data_ptr(), batches[0][0].data_ptr()]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.ndim == 4)


def test_bare_model_is_torchvisions_where_it_builds_the_same_network():
    from mobilenet_lab.models import describe
    from mobilenet_lab.tools.benchmark.loops import bare_model

    v3 = describe("mobilenet_v3_small", num_classes=100, stem="cifar")
    assert type(bare_model(v3)).__module__.startswith("torchvision")
    assert count_params(bare_model(v3)) == count_params(create_model(v3))
    for ours in (
        describe("mobilenet_v1", num_classes=100, stem="cifar"),
        v3.replace(width_mult=0.5),
        v3.replace(downsamples_removed=3),
    ):
        assert type(bare_model(ours)).__module__.startswith("mobilenet_lab")
    assert type(bare_model(v3, impl="ours")).__module__.startswith("mobilenet_lab")


def test_bare_images_per_second_times_only_the_steps_after_the_skipped_ones(monkeypatch):
    from mobilenet_lab.tools import timing
    from mobilenet_lab.tools.benchmark.loops import bare_images_per_second

    now = [0.0]
    monkeypatch.setattr(timing, "_clock", lambda: now[0])
    costs = iter([5.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5])  # first step (compile), 2 more skipped, 4 timed

    def step():
        now[0] += next(costs)

    rate, first = bare_images_per_second(step, batch=8, steps=4, skip=3)
    assert first == 5.0 and rate == pytest.approx(4 * 8 / 2.0)


def test_fit_images_per_second_times_the_training_command_itself(tiny_cifar, tmp_path):
    from mobilenet_lab.tools.benchmark.loops import fit_images_per_second

    config = Path(__file__).resolve().parents[1] / "configs/quickstart.yaml"
    args = [
        "--config",
        str(config),
        f"--data.data_dir={tiny_cifar}",
        "--data.batch_size=8",
        "--data.val_size=0",
        "--model.init_args.width_mult=0.25",
        "--trainer.max_steps=4",
        "--trainer.limit_val_batches=0",
        "--trainer.enable_progress_bar=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--checkpoint.root={tmp_path}/checkpoints",
    ]
    rate, first, module = fit_images_per_second(args, steps=2, skip=2)
    assert rate > 0 and first > 0 and module.trainer.global_step == 4
    assert module.model.description.name == "mobilenet_v3_small" and module.model.description.width_mult == 0.25
    with pytest.raises(RuntimeError, match="before step 6"):
        fit_images_per_second(args, steps=4, skip=2)


def _script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bare_loop_script_times_the_bare_step_and_refuses_bad_flags_in_one_line():
    bare_loop = _script("bare_loop")
    rate = bare_loop.main(
        [
            "--model",
            "mobilenet_v1",
            "--impl",
            "ours",
            "--width",
            "0.25",
            "--batch_size",
            "4",
            "--windows",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
        ]
    )
    assert rate > 0
    with pytest.raises(UserError, match="^--batch_size must be > 0, got 0$"):
        bare_loop.main(["--batch_size", "0"])
    with pytest.raises(UserError, match="torchvision has no mobilenet_v3_small .* at width 0.5; use --impl ours"):
        bare_loop.main(["--model", "mobilenet_v3_small", "--width", "0.5"])
