"""Every shim of ``mobilenet_lab/compat.py`` against the installed frameworks: an upgrade that removes or
renames a private name fails here, loudly, instead of silently changing resume, stop or sweeps."""

from __future__ import annotations

import lightning as L
import optuna
import pytest
import torch
from lightning.pytorch.callbacks import Callback, WeightAveraging

from mobilenet_lab import compat


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 2)), batch_size=2)


def _trainer(tmp_path, callbacks, **kwargs) -> L.Trainer:
    kwargs.setdefault("max_epochs", 2)
    return L.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        **kwargs,
    )


def test_is_last_batch_marks_each_epochs_last_batch(tmp_path):
    seen = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(compat.is_last_batch(trainer))

    _trainer(tmp_path, [Record()]).fit(_Tiny())
    assert seen == [False, False, True] * 2


def test_pending_train_loader_state_is_a_no_op_on_a_fresh_fit(tmp_path):
    calls = []

    class Load(Callback):
        def on_train_start(self, trainer, pl_module):
            assert trainer.fit_loop._combined_loader_states_to_load == []  # the name the shim reads
            compat.load_pending_train_loader_state(trainer)
            calls.append(True)

    _trainer(tmp_path, [Load()], max_epochs=1).fit(_Tiny())
    assert calls == [True]


def test_a_missing_private_name_fails_loudly():
    class Loop:
        pass

    class Trainer:
        fit_loop = Loop()

    with pytest.raises(compat.FrameworkChanged, match="_combined_loader_states_to_load.*pyproject.toml"):
        compat.load_pending_train_loader_state(Trainer())
    with pytest.raises(compat.FrameworkChanged):
        compat.trial_id(object())


def test_ddp_launchers_keep_their_children_in_procs():
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    launcher = _SubprocessScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)
    assert launcher.procs == []
    assert "procs" in _MultiProcessingLauncher.__init__.__code__.co_names

    class Strategy:
        pass

    class Trainer:
        strategy = Strategy()

    Trainer.strategy.launcher = launcher
    launcher.procs.extend(["rank1", "rank2"])
    assert compat.take_over_child_processes(Trainer()) == ["rank1", "rank2"]
    assert launcher.procs == []  # the launcher's observer has nothing left to kill
    Trainer.strategy.launcher = None
    assert compat.take_over_child_processes(Trainer()) == []


def test_tensorboard_file_writer(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)
    file_writer = compat.tensorboard_file_writer(writer)
    assert file_writer.get_logdir() == str(tmp_path)
    writer.close()


def test_weight_averaging_internals(tmp_path):
    averaging = WeightAveraging()
    assert compat.averaged_model(averaging) is None and compat.averaging_device(averaging) is None
    assert compat.latest_update_step(averaging) == 0
    compat.set_latest_update_step(averaging, 7)
    assert compat.latest_update_step(averaging) == 7


def test_optuna_storage_ids():
    study = optuna.create_study()
    trial = study.ask()
    storage = study._storage
    assert compat.study_id(study) == storage.get_study_id_from_name(study.study_name)
    assert storage.get_trial(compat.trial_id(trial)).number == trial.number
    study.tell(trial, 1.0)
    assert compat.trial_id(study.trials[0]) == compat.trial_id(trial)  # FrozenTrial too
