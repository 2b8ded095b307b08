"""Knowledge distillation (mobilenet_lab.distill) and test-time flip averaging."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from mobilenet_lab.distill import Distillation, Teacher, distillation_loss
from mobilenet_lab.errors import UserError
from mobilenet_lab.versions import MobileNetV2, MobileNetV3Small

ROOT = Path(__file__).resolve().parents[1]


def _trainer(max_steps: int = -1, max_epochs: int | None = None, callbacks=(), **kwargs):
    import lightning as L

    from mobilenet_lab.run_layout import AtomicCheckpointIO

    return L.Trainer(
        max_steps=max_steps,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=list(callbacks),
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        **kwargs,
    )


def _random_loader(n: int = 16, num_classes: int = 10, batch_size: int = 8):
    from torch.utils.data import DataLoader, TensorDataset

    return DataLoader(
        TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, num_classes, (n,))), batch_size=batch_size
    )


def write_teacher_checkpoint(path: Path, num_classes: int = 10) -> Path:
    """A V2 (0.25) teacher after one step, as ``fit`` writes it (also used by test_cli for the shipped config)."""
    torch.manual_seed(1)
    teacher = MobileNetV2(width_mult=0.25, num_classes=num_classes)
    trainer = _trainer(max_steps=1)
    trainer.fit(teacher, train_dataloaders=_random_loader(num_classes=num_classes))
    path.parent.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(path, weights_only=False)
    return path


@pytest.fixture
def teacher_checkpoint(tmp_path: Path) -> Path:
    return write_teacher_checkpoint(tmp_path / "teacher.ckpt")


def test_distillation_loss_is_the_formula_on_fixed_logits():
    student = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    teacher = torch.tensor([[1.0, 0.0, -2.0], [0.0, 4.0, 1.0]])
    T, alpha = 3.0, 0.7
    kl = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):  # written out: sum_c p_t (log p_t - log p_s)
        zs = sum(math.exp(v / T) for v in s_row)
        zt = sum(math.exp(v / T) for v in t_row)
        for s, t in zip(s_row, t_row):
            p_t = math.exp(t / T) / zt
            kl += p_t * (math.log(p_t) - math.log(math.exp(s / T) / zs))
    expected_kd = T * T * kl / len(student)
    assert distillation_loss(student, teacher, T).item() == pytest.approx(expected_kd, rel=1e-6)
    assert distillation_loss(teacher, teacher, T).item() == pytest.approx(0.0, abs=1e-7)

    teacher_net = Teacher(Distillation(teacher="unused", alpha=alpha, temperature=T), num_classes=3)
    teacher_net.logits = lambda images: teacher  # fixed teacher logits
    targets = torch.tensor([0, 2])
    ce = F.cross_entropy(student, targets)
    total, terms = teacher_net.loss(torch.zeros(2, 3, 4, 4), student, ce)
    assert total.item() == pytest.approx((1 - alpha) * ce.item() + alpha * expected_kd, rel=1e-6)
    assert terms["train/loss_kd"].item() == pytest.approx(expected_kd, rel=1e-6)
    assert terms["train/loss_ce"].item() == pytest.approx(ce.item())


def test_teacher_gets_no_gradient_is_not_optimized_nor_saved(teacher_checkpoint, tmp_path, one_thread):
    import lightning as L

    from mobilenet_lab import load_model

    saved_teacher = load_model(teacher_checkpoint).model.state_dict()
    seen: dict = {}

    class Inspect(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            teacher = pl_module.teacher.network
            seen["teacher_training"] = teacher.training
            seen["teacher_grads"] = [p.grad for p in teacher.parameters()]
            seen["teacher_requires_grad"] = any(p.requires_grad for p in teacher.parameters())
            seen["optimized"] = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
            seen["teacher_params"] = {id(p) for p in teacher.parameters()}
            seen["student_params"] = {id(p) for p in pl_module.parameters()}
            seen["logged"] = set(trainer.callback_metrics)

    torch.manual_seed(0)
    student = MobileNetV3Small(
        width_mult=0.25,
        num_classes=10,
        distill=Distillation(teacher=str(teacher_checkpoint), alpha=0.5, temperature=2.0),
    )
    assert student.teacher.network is None  # read only when a fit starts
    trainer = _trainer(max_steps=2, callbacks=[Inspect()])
    trainer.fit(student, train_dataloaders=_random_loader())
    assert seen["teacher_training"] is False and seen["teacher_requires_grad"] is False
    assert all(g is None for g in seen["teacher_grads"])
    assert not seen["optimized"] & seen["teacher_params"]
    assert seen["optimized"] == seen["student_params"]
    assert {"train/loss_ce", "train/loss_kd"} <= seen["logged"]
    for k, v in student.teacher.network.state_dict().items():  # unchanged by the student's training
        assert torch.equal(v, saved_teacher[k]), k

    # The student's checkpoint is a normal one: no teacher weights, no distill option, readable without the teacher.
    path = tmp_path / "student.ckpt"
    trainer.save_checkpoint(path, weights_only=False)
    checkpoint = torch.load(path, weights_only=True)
    assert all(k.startswith("model.") for k in checkpoint["state_dict"])
    assert "distill" not in checkpoint["hyper_parameters"]
    teacher_checkpoint.unlink()
    net = load_model(path)
    images = torch.rand(2, 3, 32, 32)
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(images), student((images - net.mean) / net.std))


def test_bad_teacher_is_one_clear_line(teacher_checkpoint, tmp_path):
    def load(path, num_classes=10, **options):
        Teacher(Distillation(teacher=str(path), **options), num_classes).load()

    with pytest.raises(UserError, match=r"^distill.teacher: checkpoint .*missing.ckpt does not exist"):
        load(tmp_path / "missing.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(UserError, match=r"^distill.teacher: .*not written by mobilenet_lab's fit"):
        load(foreign)
    with pytest.raises(UserError, match=r"has 10 classes but the student has 100"):
        load(teacher_checkpoint, num_classes=100)
    with pytest.raises(UserError, match="alpha must be in"):
        load(teacher_checkpoint, alpha=1.5)
    with pytest.raises(UserError, match="temperature must be > 0"):
        load(teacher_checkpoint, temperature=0.0)


def test_teacher_sees_the_students_batch_in_its_own_normalisation(teacher_checkpoint):
    """The student's batch is normalised with the data module's mean/std; the teacher gets its checkpoint's."""
    from types import SimpleNamespace

    from mobilenet_lab import load_model

    net = load_model(teacher_checkpoint)  # mean 0 / std 1: the checkpoint was written without a data module
    teacher = Teacher(Distillation(teacher=str(teacher_checkpoint)), num_classes=10)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    teacher.load(SimpleNamespace(mean=mean, std=std))
    raw = torch.rand(3, 3, 32, 32)
    student_batch = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(teacher.logits(student_batch), net(raw), rtol=1e-4, atol=1e-5)


def test_distill_and_ema_from_configs_and_the_command_line(tmp_path, monkeypatch):
    """Any student version takes the option group; the example config and the EMA recipe compose with a version's."""
    from mobilenet_lab.cli import MobileNetCLI
    from mobilenet_lab.ema import EMA
    from mobilenet_lab.versions import MobileNetV1

    monkeypatch.chdir(tmp_path)
    cli = MobileNetCLI(
        args=[
            "--config",
            str(ROOT / "configs/v3_small.yaml"),
            "--config",
            str(ROOT / "configs/distill_v3_small_from_v3_large.yaml"),
            "--config",
            str(ROOT / "configs/recipes/ema.yaml"),
            "--model.init_args.distill.teacher=t.ckpt",
            "--model.init_args.distill.alpha=0.5",
            "--model.init_args.width_mult=0.5",
        ],
        run=False,
    )
    assert isinstance(cli.model, MobileNetV3Small)
    assert cli.model.hparams.width_mult == 0.5 and cli.model.hparams.dropout == 0.2  # the student's own options
    assert cli.model.teacher.config == Distillation(teacher="t.ckpt", alpha=0.5, temperature=4.0)
    (ema,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, EMA)]
    assert ema.update.decay == 0.999 and ema.update.warmup_power == 0.75
    cli = MobileNetCLI(
        args=[
            "--model=mobilenet_lab.MobileNetV1",
            "--model.init_args.width_mult=0.25",
            "--model.init_args.activation=relu6",
            "--model.init_args.distill.teacher=t.ckpt",
            "--model.init_args.distill.temperature=2",
        ],
        run=False,
    )
    assert isinstance(cli.model, MobileNetV1) and cli.model.hparams.activation == "relu6"
    assert cli.model.teacher.config == Distillation(teacher="t.ckpt", alpha=0.9, temperature=2.0)


# ------------------------------------------------------------------------------------------------
# Test-time flip averaging
# ------------------------------------------------------------------------------------------------


def test_test_time_flip_gives_the_mean_of_the_two_logits():
    torch.manual_seed(0)
    module = MobileNetV3Small(width_mult=0.25, num_classes=10, test_time_flip=True).eval()
    for layer in module.model.modules():  # the initial classifier gives logits near 0
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=1.0)
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = module(images), module(images.flip(3))
        averaged = module.evaluate(images)
        module.log = lambda *args, **kwargs: None  # no trainer attached
        from_test_step = module.test_step((images, torch.zeros(4, dtype=torch.long)), 0)
    torch.testing.assert_close(averaged, (plain + mirrored) / 2)
    torch.testing.assert_close(from_test_step, averaged)
    assert (averaged - plain).abs().max() > 1e-2 * plain.abs().max()  # the mirror does change the logits
    module.test_time_flip = False
    with torch.no_grad():
        torch.testing.assert_close(module.evaluate(images), plain)
    assert "test_time_flip" not in module.hparams  # an evaluation option, not part of the checkpoint


def test_test_time_flip_from_the_command_line_without_a_config(tmp_path, tiny_cifar, monkeypatch, one_thread):
    """`test --ckpt_path C --model.init_args.test_time_flip true`: the model from C, its logits flip-averaged."""
    from mobilenet_lab import load_model
    from mobilenet_lab.cli import MobileNetCLI
    from mobilenet_lab.data import CIFAR100_MEAN, CIFAR100_STD, load_split

    torch.manual_seed(0)
    module = MobileNetV3Small(width_mult=0.25, bn_momentum=0.5)
    module.hparams["_class_path"] = "mobilenet_lab.MobileNetV3Small"  # as the command line records it
    trainer = _trainer(max_steps=3)
    trainer.fit(module, train_dataloaders=_random_loader(n=24, num_classes=100))
    for layer in module.model.modules():  # logits far from 0, so that the mirror shows in the loss
        if isinstance(layer, torch.nn.Linear):
            torch.nn.init.normal_(layer.weight, std=1.0)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path, weights_only=False)
    net = load_model(path)
    test = load_split(tiny_cifar, "test")
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CIFAR100_MEAN, CIFAR100_STD))
    images = (test.images.float() / 255 - mean) / std  # the data module's normalisation (not the checkpoint's)

    monkeypatch.chdir(tmp_path)
    logits = {}
    for flip in ("false", "true"):
        RecordTestLogits.seen = []
        cli = MobileNetCLI(
            args=[
                "test",
                f"--ckpt_path={path}",
                f"--data.data_dir={tiny_cifar}",
                f"--model.init_args.test_time_flip={flip}",
                "--trainer.enable_progress_bar=false",
                "--trainer.logger=false",
                "--trainer.callbacks+=test_distill.RecordTestLogits",
            ]
        )
        assert cli.model.test_time_flip is (flip == "true")
        logits[flip] = torch.cat(RecordTestLogits.seen)
    with torch.no_grad():
        plain, mirrored = net.model(images), net.model(images.flip(3))
    torch.testing.assert_close(logits["false"], plain, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(logits["true"], (plain + mirrored) / 2, rtol=1e-3, atol=1e-3)
    assert (logits["true"] - logits["false"]).abs().max() > 0.1  # the mirror changes the logits


class RecordTestLogits(L.Callback):
    """What test_step returned (the logits), batch by batch, in test order."""

    seen: list[torch.Tensor] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        RecordTestLogits.seen.append(outputs.detach().float().cpu())


@pytest.mark.slow
def test_distilled_student_agrees_with_its_teacher_more_than_a_plain_one(tiny_cifar, tmp_path, monkeypatch, one_thread):
    """Tiny archive, V3-Small 0.25 everywhere: a teacher (8 epochs), then two students (4 epochs, same seed), one
    with --model.init_args.distill.teacher. Measured: agreement with the teacher on the 200 test images 14% vs 5%."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mobilenet_lab import load_model
    from mobilenet_lab.cli import MobileNetCLI
    from mobilenet_lab.data import load_split

    monkeypatch.chdir(tmp_path)

    def fit(name: str, epochs: int, *extra: str) -> Path:
        MobileNetCLI(
            args=[
                "fit",
                "--config",
                str(ROOT / "configs/quickstart.yaml"),
                f"--data.data_dir={tiny_cifar}",
                "--model.init_args.width_mult=0.25",
                "--model.init_args.bn_momentum=0.3",
                "--data.batch_size=16",
                "--data.val_size=100",
                f"--trainer.max_epochs={epochs}",
                "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false",
                "--trainer.log_every_n_steps=2",
                f"--trainer.logger.init_args.name={name}",
                *extra,
            ]
        )
        return tmp_path / "checkpoints" / name / "version_0" / "last.ckpt"

    teacher = fit("teacher", 8)
    student = fit("student", 4, f"--model.init_args.distill.teacher={teacher}")
    plain = fit("plain", 4)
    events = EventAccumulator(str(tmp_path / "lightning_logs/student/version_0"))
    events.Reload()
    assert {"train/loss_ce", "train/loss_kd", "train/loss"} <= set(events.Tags()["scalars"])

    test = load_split(tiny_cifar, "test")
    images = test.images.float() / 255
    with torch.no_grad():
        predictions = {
            name: load_model(path)(images).argmax(1)
            for name, path in (("teacher", teacher), ("student", student), ("plain", plain))
        }
    agreement = {
        name: (predictions[name] == predictions["teacher"]).float().mean().item() for name in ("student", "plain")
    }
    print(f"agreement with the teacher: distilled {agreement['student']:.3f}, plain {agreement['plain']:.3f}")
    assert agreement["student"] > agreement["plain"] + 0.03

    # The student's checkpoint is read without the teacher file, like any other.
    teacher.unlink()
    cli = MobileNetCLI(
        args=[
            "test",
            f"--ckpt_path={student}",
            f"--data.data_dir={tiny_cifar}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        ]
    )
    accuracy = (predictions["student"] == test.labels).float().mean().item()
    assert float(cli.trainer.callback_metrics["test/acc"]) == pytest.approx(accuracy, abs=1e-6)
