"""Weight EMA (mobilenet_lab.ema): the average itself, the checkpoints it writes, test/load_model/export reading
them, and exact SIGKILL-and-resume with EMA on."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mobilenet_lab.ema import EMA, EMAUpdate
from mobilenet_lab.errors import UserError
from mobilenet_lab.versions import MobileNetV3Small

ROOT = Path(__file__).resolve().parents[1]
EMA_RECIPE = str(ROOT / "configs/recipes/ema.yaml")


def _tiny_fit(callbacks, steps: int = 6, num_classes: int = 10, **trainer_kwargs):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from mobilenet_lab.run_layout import AtomicCheckpointIO

    torch.manual_seed(0)
    module = MobileNetV3Small(
        width_mult=0.25,
        num_classes=num_classes,
        bn_momentum=0.5,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
        lr_scheduler=None,
    )
    module.hparams["_class_path"] = "mobilenet_lab.MobileNetV3Small"  # as the command line records it
    data = DataLoader(
        TensorDataset(torch.randn(8 * steps, 3, 32, 32), torch.randint(0, num_classes, (8 * steps,))), batch_size=8
    )
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        **trainer_kwargs,
    )
    trainer.fit(module, train_dataloaders=data)
    return module, trainer


def test_decay_warms_up_to_its_final_value():
    update = EMAUpdate(decay=0.999, warmup_power=0.75)
    assert float(update.decay_at(1)) == pytest.approx(1 - 2**-0.75)
    assert float(update.decay_at(99)) == pytest.approx(1 - 100**-0.75)
    assert float(update.decay_at(20_000)) == 0.999  # capped
    assert float(EMAUpdate(decay=0.99, warmup_power=None).decay_at(1)) == 0.99


def test_ema_equals_a_hand_computed_average_and_differs_from_the_live_weights(one_thread):
    """Weights and BatchNorm buffers: float entries follow ema = d_n * ema + (1 - d_n) * live, counts are copied."""
    import lightning as L

    decay, power = 0.8, 0.75
    reference: dict[str, torch.Tensor] = {}
    live: dict[str, torch.Tensor] = {}

    class HandAverage(L.Callback):  # the same update written out, fed the live weights after each step
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            state = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}
            live.update(state)
            n = trainer.global_step - 1  # updates already averaged
            if not reference:
                reference.update(state)
                return
            d = min(decay, 1 - (1 + n) ** -power)
            for k, v in state.items():
                reference[k] = d * reference[k] + (1 - d) * v if v.is_floating_point() else v

    ema = EMA(decay=decay, warmup_power=power)
    module, trainer = _tiny_fit([ema, HandAverage()])
    averaged = {
        k[len("module.model.") :]: v
        for k, v in ema._average_model.state_dict().items()
        if k.startswith("module.model.")
    }
    assert averaged.keys() == reference.keys()
    assert any("running_var" in k for k in averaged)  # BatchNorm statistics are averaged too
    for k in averaged:
        torch.testing.assert_close(averaged[k], reference[k], rtol=1e-5, atol=1e-6, msg=k)
    assert int(ema._average_model.n_averaged) == 6
    weights = [k for k in averaged if averaged[k].is_floating_point()]
    gap = max((averaged[k] - live[k]).abs().max().item() for k in weights)
    assert gap > 1e-2  # the average is not the last step's weights
    # The fit ends with the average in the module (Lightning's WeightAveraging.on_train_end).
    for k, v in module.model.state_dict().items():
        torch.testing.assert_close(v, averaged[k])


def test_an_ema_update_never_reads_a_tensor_back_to_the_host(one_thread):
    """On a GPU every read of a device value (``.item()``, a 0-d tensor where torch wants a number) waits for
    the whole queued step; tests/test_gpu.py caught one per EMA update on an H100. Here, on the CPU, the same
    reads show up as ``aten._local_scalar_dense`` calls, which the update must not make (after the first
    update of a fit, which reads the count once), while still averaging with the warmed-up decay."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.reads += func is torch.ops.aten._local_scalar_dense.default
            return func(*args, **(kwargs or {}))

    ema = EMA(decay=0.8, warmup_power=0.75)
    module, _ = _tiny_fit([ema], steps=3)
    average = ema._average_model
    before = {k: v.clone() for k, v in average.module.state_dict().items()}
    with torch.no_grad():  # the fit ended with the average copied into the module: make the live weights differ
        for p in module.parameters():
            p.add_(torch.randn_like(p))
    live = {k: v.detach().clone() for k, v in module.state_dict().items()}
    with HostReads() as mode:
        ema._update(module)
    assert mode.reads == 0
    assert int(average.n_averaged) == 4
    assert any(not torch.equal(v, before[k]) for k, v in average.module.state_dict().items())
    d = min(0.8, 1 - (1 + 3) ** -0.75)  # the decay after 3 updates
    for k, v in average.module.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, d * before[k] + (1 - d) * live[k], rtol=1e-5, atol=1e-6, msg=k)


def test_ema_checkpoint_is_evaluated_with_its_average_by_test_and_load_model(
    tmp_path, tiny_cifar, monkeypatch, one_thread
):
    """state_dict is the average, current_model_state the live weights; `test --ckpt_path` and load_model use the former."""
    import lightning as L

    from mobilenet_lab import load_model
    from mobilenet_lab.checkpoint import averaged_weights
    from mobilenet_lab.cli import MobileNetCLI
    from mobilenet_lab.data import load_split

    path = tmp_path / "ema.ckpt"

    class SaveAtTheLastStep(L.Callback):  # as last.ckpt is written: before the fit's end copies the average in
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 4:
                trainer.save_checkpoint(path, weights_only=False)

    ema = EMA(decay=0.9, warmup_power=None)
    _tiny_fit([ema, SaveAtTheLastStep()], steps=4, num_classes=100)
    checkpoint = torch.load(path, weights_only=True)
    average, live = ema._average_model.module.state_dict(), checkpoint["current_model_state"]
    assert all(torch.equal(checkpoint["state_dict"][k], average[k]) for k in average)
    assert max((average[k] - live[k]).abs().max().item() for k in live if live[k].is_floating_point()) > 1e-2
    assert checkpoint["mobilenet_lab_weights"] == {"kind": "ema", "decay": 0.9, "warmup_power": None, "updates": 4}
    assert averaged_weights(checkpoint) == "EMA of the weights (decay 0.9, 4 updates)"
    net = load_model(path)
    assert net.weights == "EMA of the weights (decay 0.9, 4 updates)"
    for k, v in net.model.state_dict().items():
        assert torch.equal(v, average["model." + k])
    live_net = load_model(path)
    live_net.model.load_state_dict({k[len("model.") :]: v for k, v in live.items()})

    test = load_split(tiny_cifar, "test")
    images = (test.images.float() / 255 - net.mean) / net.std  # the data module's normalisation

    def loss_of(classifier) -> float:
        with torch.no_grad():
            return F.cross_entropy(classifier.model(images), test.labels).item()

    monkeypatch.chdir(tmp_path)
    cli = MobileNetCLI(
        args=[
            "test",
            f"--ckpt_path={path}",
            f"--data.data_dir={tiny_cifar}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        ]
    )
    reported = float(cli.trainer.callback_metrics["test/loss"])
    assert reported == pytest.approx(loss_of(net), abs=1e-5)
    assert abs(reported - loss_of(live_net)) > 1e-3


def test_bad_ema_settings_are_one_line():
    with pytest.raises(UserError, match="decay must be in"):
        EMA(decay=1.0)
    with pytest.raises(UserError, match="warmup_power must be"):
        EMA(warmup_power=0)


# ------------------------------------------------------------------------------------------------
# Command line: the recipe, test --ckpt_path, load_model, and SIGKILL + resume (reusing test_resume's harness)
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ema_run(plateau_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 uninterrupted epochs (18 steps each) with the EMA recipe; its decay lowered so 36 steps move the average."""
    from test_resume import fit_command, run

    work = tmp_path_factory.mktemp("ema_uninterrupted")
    result = run(fit_command(plateau_cifar, *EMA_OPTIONS), work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "EMA of the weights (decay 0.9" in result.stdout + result.stderr
    return work


EMA_OPTIONS = ["--config", EMA_RECIPE, "--trainer.callbacks.init_args.decay=0.9"]


@pytest.mark.slow
def test_ema_run_is_tested_and_loaded_with_its_averaged_weights(ema_run, plateau_cifar, monkeypatch):
    from test_resume import RUN, load

    from mobilenet_lab import load_model
    from mobilenet_lab.cli import MobileNetCLI
    from mobilenet_lab.data import load_split

    last = ema_run / RUN / "last.ckpt"
    checkpoint = load(last)
    assert checkpoint["global_step"] == 36 and checkpoint["mobilenet_lab_weights"]["updates"] == 36
    live = checkpoint["current_model_state"]
    assert (
        max(
            (checkpoint["state_dict"][k].double() - live[k].double()).abs().max().item()
            for k in live
            if live[k].is_floating_point()
        )
        > 1e-3
    )
    test = load_split(plateau_cifar, "test")
    net = load_model(last)
    assert net.weights.startswith("EMA of the weights (decay 0.9")
    live_net = load_model(last)
    live_net.model.load_state_dict({k[len("model.") :]: v for k, v in live.items()})

    def loss_of(model) -> float:
        with torch.no_grad():
            return F.cross_entropy(
                model(test.images.float() / 255),
                test.labels,
                label_smoothing=checkpoint["hyper_parameters"]["label_smoothing"],
            ).item()

    monkeypatch.chdir(ema_run)
    cli = MobileNetCLI(
        args=[
            "test",
            f"--ckpt_path={last}",
            f"--data.data_dir={plateau_cifar}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        ]
    )
    reported = float(cli.trainer.callback_metrics["test/loss"])
    ema_loss, live_loss = loss_of(net), loss_of(live_net)
    assert reported == pytest.approx(ema_loss, abs=1e-5)
    assert abs(reported - live_loss) > 1e-4


@pytest.mark.slow
def test_sigkill_during_ema_validation_then_resume_is_exact(plateau_cifar, tmp_path, ema_run):
    """Killed while the averaged weights are swapped in for validation (epoch 2), resumed from the step-35 last.ckpt."""
    from test_resume import RUN, fit_command, load, max_difference, run, signal_at

    options = [*EMA_OPTIONS, "--checkpoint.last_every_n_steps=5"]
    killed = run(fit_command(plateau_cifar, *options, *signal_at("validation_batch", 1, 2)), tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert load(tmp_path / RUN / "last.ckpt")["global_step"] == 35
    resumed = run(fit_command(plateau_cifar, *options, f"--ckpt_path={RUN / 'last.ckpt'}"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final, expected = load(tmp_path / RUN / "last.ckpt"), load(ema_run / RUN / "last.ckpt")
    assert final["global_step"] == expected["global_step"] == 36
    assert max_difference(final["state_dict"], expected["state_dict"]) <= 1e-6  # the average
    assert max_difference(final["current_model_state"], expected["current_model_state"]) <= 1e-6  # the live weights
    assert final["averaging_state"]["n_averaged"] == expected["averaging_state"]["n_averaged"] == 36
