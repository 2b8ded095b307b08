"""The LightningModule system: parameter groups, per-step schedules, soft targets, load_model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mobilenet_lab.schedules import MultiStep, OneCycle, WarmupCosine
from mobilenet_lab.versions import VERSION_MODULES, MobileNetV2, MobileNetV3Small


def test_no_weight_decay_on_batchnorm_and_bias():
    module = MobileNetV3Small(width_mult=0.25)
    decay, no_decay = module.parameter_groups()
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    norm_and_bias = {
        id(p)
        for m in module.model.modules()
        for name, p in m.named_parameters(recurse=False)
        if isinstance(m, nn.BatchNorm2d) or name == "bias"
    }
    assert {id(p) for p in no_decay["params"]} == norm_and_bias
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(module.model.parameters()))
    (everything,) = MobileNetV3Small(width_mult=0.25, weight_decay_on_norm_and_bias=True).parameter_groups()
    assert len(everything["params"]) == len(list(module.model.parameters()))


def _lrs(scheduler_cls, steps: int, **kwargs) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = scheduler_cls(optimizer, steps, 10, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_cosine():
    lrs = _lrs(WarmupCosine, 100, warmup_epochs=2, warmup_start_factor=0.01)  # 10 steps per epoch
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[10] == pytest.approx(0.1 * (0.01 + 0.99 * 10 / 20))  # halfway through the 20 warmup steps
    assert lrs[20] == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 40 / 80)))
    assert lrs[-1] < 0.001 and all(a >= b for a, b in zip(lrs[20:], lrs[21:]))


def test_multistep_milestones_in_epochs():
    lrs = _lrs(MultiStep, 50, milestones=[2, 4], gamma=0.1)
    assert lrs[19] == pytest.approx(0.1) and lrs[20] == pytest.approx(0.01) and lrs[40] == pytest.approx(0.001)


def test_one_cycle_peaks_at_configured_lr():
    lrs = _lrs(OneCycle, 100, pct_start=0.25)
    assert max(lrs) == pytest.approx(0.1, rel=1e-6) and lrs.index(max(lrs)) == 24
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] < 1e-4


@pytest.mark.parametrize("cls", list(VERSION_MODULES.values()), ids=lambda c: c.__name__)
def test_version_modules_build_their_network(cls):
    module = cls(width_mult=0.25, num_classes=10)
    assert module.model.config["name"] == cls.model_name
    assert module.model.config["stem"] == "cifar" and module.model.num_classes == 10
    logits = module(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)


def test_soft_targets_from_mixup_train():
    # No dropout: the two forward passes (train mode, same batch, so the same batch statistics) are
    # the same computation, and the loss must be cross-entropy against the soft targets exactly.
    module = MobileNetV2(width_mult=0.25, num_classes=10, dropout=0.0)
    images = torch.randn(4, 3, 32, 32)
    soft = torch.softmax(torch.randn(4, 10), 1)
    module.log = lambda *args, **kwargs: None  # no trainer attached
    loss = module.training_step((images, soft), 0)
    expected = nn.functional.cross_entropy(module(images), soft)
    assert torch.isfinite(loss) and loss.item() > 0
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_load_model_reproduces_the_module(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from mobilenet_lab import load_model
    from mobilenet_lab.run_layout import AtomicCheckpointIO

    torch.manual_seed(0)
    module = MobileNetV3Small(width_mult=0.25, num_classes=100)
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))), batch_size=4)
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(module, train_dataloaders=data)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    net = load_model(path)
    assert not net.training and net.image_size == 32
    images = torch.rand(3, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        expected = module((images - net.mean) / net.std)
        torch.testing.assert_close(net(images), expected)


def test_schedule_counts_epochs_in_steps_when_max_steps_ends_the_run():
    """max_steps=30 with max_epochs=10 and 18 steps per epoch: warmup is one real epoch, the LR ends at its floor."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    lrs: list[float] = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

        def on_train_end(self, trainer, pl_module):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    torch.manual_seed(0)
    module = MobileNetV3Small(
        width_mult=0.25,
        num_classes=10,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        lr_scheduler=lambda o, total, per_epoch: WarmupCosine(o, total, per_epoch, warmup_epochs=1),
    )
    data = DataLoader(TensorDataset(torch.randn(72, 3, 32, 32), torch.randint(0, 10, (72,))), batch_size=4)
    trainer = L.Trainer(
        max_steps=30,
        max_epochs=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[RecordLR()],
    )
    trainer.fit(module, train_dataloaders=data)
    assert trainer.global_step == 30 and len(lrs) == 31
    assert lrs[0] == pytest.approx(0.001)
    assert lrs[17] < 0.1 and lrs[18] == pytest.approx(0.1)  # warmup = 18 steps (one epoch), not 30 // 10
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine reached its floor at the last step


def test_each_rank_saves_and_restores_its_own_rng_state():
    from types import SimpleNamespace

    module = MobileNetV3Small(width_mult=0.25, num_classes=10)
    torch.manual_seed(0)
    rank0 = torch.get_rng_state()
    torch.manual_seed(1)
    rank1 = torch.get_rng_state()

    def fake_trainer(rank: int) -> SimpleNamespace:  # a 2-process run seen from `rank`
        gather = lambda t, group=None, sync_grads=False: torch.stack([rank0, rank1])  # noqa: E731
        return SimpleNamespace(global_rank=rank, world_size=2, strategy=SimpleNamespace(all_gather=gather))

    module._trainer = fake_trainer(1)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    assert [torch.equal(s, e) for s, e in zip(checkpoint["rng"]["torch"], (rank0, rank1))] == [True, True]
    for rank, expected in ((0, rank0), (1, rank1)):
        torch.manual_seed(123)
        module._trainer = fake_trainer(rank)
        module.on_load_checkpoint(checkpoint)
        assert torch.equal(torch.get_rng_state(), expected)
    module._trainer = None
