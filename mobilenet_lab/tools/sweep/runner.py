"""Running a sweep's trials: one ``fit`` process per trial, ``--workers`` of them at once.

Each worker (a thread of the sweep process) loops: fail the trials whose worker stopped beating,
then take the next trial from the study through Optuna (``study.optimize`` one trial at a time:
heartbeat, state and sampler as Optuna does them), run its fit command as a child process, store
the trial's facts (model, size, times, test accuracy: :func:`results.trial_facts`) and tell the
study the result. A grid's points are queued trials that the storage hands out one per worker;
a search asks the sampler until ``n_trials`` trials are done or running. A worker with nothing
left to start waits while other trials run (one of them may die and be queued again), so the
command returns when the whole sweep is finished.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

import mobilenet_lab

from ...compat import trial_id
from .commands import cli_value, fit_command, last_error, short, shown, test_command, trial_name
from .devices import cpu_threads_env, gpu_slots
from .results import FACTS_ATTR, trial_facts
from .spec import SweepSpec
from .storage import StudyLock, fail_stale_trials, requeue, retry_history
from .trial import PARENT_ENV, PRUNED_ATTR, STORAGE_ENV

__all__ = ["Runner"]

#: Exit statuses of a fit stopped by SIGINT/SIGTERM (its graceful stop saved last.ckpt).
INTERRUPTED = {130, 143, -signal.SIGINT, -signal.SIGTERM}
#: Seconds between looks at the study while waiting for other workers' trials.
POLL_S = float(os.environ.get("MOBILENET_LAB_SWEEP_POLL_S", "5"))


class TrialFailed(Exception):
    """The trial's fit (or test) failed; the study records the trial as failed."""


class TrialInterrupted(Exception):
    """The sweep was stopped while the trial ran; the trial is failed and queued again."""


class _QuietTrialFailures(logging.Filter):
    """Optuna logs a failed trial with its traceback, then its value; the sweep prints its own line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] in (TrialFailed, TrialInterrupted):
            return False
        return not record.getMessage().endswith("failed with value None.")


_QUIET = _QuietTrialFailures()


class Runner:
    """Runs the trials of one sweep on this machine.

    Args:
        spec: The sweep.
        study: Its study (created or joined).
        storage: The study's RDB storage (read directly: what the trial processes wrote).
        url: The storage URL, passed to the trial processes in their environment.
        extra: Arguments after ``--`` on the sweep's command line, for every fit.
        log_root: The logger's folder (``lightning_logs``): trials log to ``<log_root>/<sweep>/trial_NNN``.
        checkpoint_root: The checkpoint folder: ``<checkpoint_root>/<sweep>/trial_NNN``. A trial queued
            again resumes from the ``last.ckpt`` its predecessor left there, so a root on a file system
            that every machine mounts lets it resume on any machine.
    """

    def __init__(
        self,
        spec: SweepSpec,
        study: optuna.Study,
        storage: RDBStorage,
        url: str,
        extra: list[str],
        log_root: Path,
        checkpoint_root: Path,
    ) -> None:
        self.spec, self.study, self.storage, self.url, self.extra = spec, study, storage, url, list(extra)
        self.log_root, self.checkpoint_root = log_root, checkpoint_root
        self.stop = threading.Event()
        self.signal: int | None = None
        self.workers = 1
        self._children: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._print_lock = threading.Lock()
        self.errors: deque[BaseException] = deque()
        # Held from a worker's look at the study until its trial is taken (every machine, with PostgreSQL).
        self._ask_lock = StudyLock(url, f"ask-{spec.name}")

    # ------------------------------------------------------------------ the sweep
    def run(self, workers: int) -> int | None:
        """Runs until the sweep is finished or stopped; returns the signal that stopped it, if any."""
        for handler in logging.getLogger("optuna").handlers:  # a logger's filter misses its children's records
            handler.addFilter(_QUIET)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        devices = gpu_slots(workers)
        self.workers = workers
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        threads = [
            threading.Thread(target=self._worker, args=(devices[i],), name=f"sweep-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        try:
            for thread in threads:
                thread.start()
                time.sleep(0.2)  # stagger the first database writes a little
            while any(t.is_alive() for t in threads):
                for thread in threads:
                    thread.join(timeout=0.5)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.errors:
            raise self.errors[0]
        return self.signal

    def _on_signal(self, signum: int, frame: Any) -> None:
        first = self.signal is None
        self.signal = signum
        self.stop.set()
        with self._lock:
            children = list(self._children.values())
        for child in children:  # each fit's graceful stop saves last.ckpt (a second Ctrl+C: at once)
            try:
                child.send_signal(signum)
            except ProcessLookupError:
                pass
        if first:
            self.say(
                f"stopping: {len(children)} running trial(s) save last.ckpt and are queued again; "
                "run the same command to continue"
            )

    def say(self, text: str) -> None:
        with self._print_lock:
            print(f"[sweep {self.spec.name}] {text}", flush=True)

    # ------------------------------------------------------------------ one worker
    def _worker(self, device: str | None) -> None:
        try:
            while not self.stop.is_set():
                fail_stale_trials(self.study)  # Optuna checks only when a trial is taken; this worker may wait
                self._ask_lock.acquire()
                action = "failed"
                try:
                    action = "done" if self.stop.is_set() else self._next_action()
                finally:
                    if action != "run":
                        self._ask_lock.release()
                if action == "done":
                    return
                if action == "wait":
                    self.stop.wait(POLL_S)
                    continue
                current: dict[str, Any] = {}
                try:
                    self.study.optimize(
                        lambda trial, current=current: self._objective(trial, device, current),
                        n_trials=1,
                        catch=(TrialFailed,),
                        gc_after_trial=False,
                    )
                except TrialInterrupted:
                    trial = self.storage.get_trial(current["id"])
                    if trial.state == TrialState.FAIL:
                        requeue(self.study, trial)
                    return
                finally:
                    if not current.get("taken"):  # Optuna failed before handing over a trial
                        self._ask_lock.release()
        except BaseException as err:  # noqa: BLE001 - reported by run() in the main thread
            self.errors.append(err)
            self.stop.set()

    def _next_action(self) -> str:
        """``run`` (a trial to start), ``wait`` (none now, but trials are running) or ``done``."""
        trials = self.study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        running = states.count(TrialState.RUNNING)
        if states.count(TrialState.WAITING):
            return "run"
        if not self.spec.is_grid:
            retried = {n for t in trials for n in retry_history(t)}
            if sum(1 for t in trials if t.number not in retried) < self.spec.n_trials:
                return "run"
        return "wait" if running else "done"

    def _objective(self, trial: optuna.Trial, device: str | None, current: dict[str, Any]) -> float:
        current["id"], current["taken"] = trial_id(trial), True
        self._ask_lock.release()
        params = self.spec.suggest(trial)
        name = trial_name(trial.number)
        log_dir = self.log_root / self.spec.name / name
        checkpoint_dir = self.checkpoint_root / self.spec.name / name
        resume = self._resume_checkpoint(trial)
        command = fit_command(self.spec, params, trial.number, self.extra, resume)
        for key, value in (
            ("worker", {"host": socket.gethostname(), "pid": os.getpid()}),
            ("log_dir", str(log_dir)),
            ("checkpoint_dir", str(checkpoint_dir)),
            ("command", shown(command)),
            ("device", device),
            ("resumed_from", resume),
        ):
            trial.set_user_attr(key, value)
        values = ", ".join(f"{short(k)}={short(cli_value(v))}" for k, v in params.items())
        self.say(
            f"trial {trial.number} started: {values}"
            + (f" on GPU {device}" if device is not None else "")
            + (f", resuming {resume}" if resume else "")
            + f" (output in {log_dir / 'fit.log'})"
        )
        started = time.monotonic()
        code = self._run(command, log_dir / "fit.log", device)
        if self.stop.is_set() or code in INTERRUPTED:
            raise TrialInterrupted(f"stopped (fit exit status {code})")
        try:
            best = self._outcome(trial, code, log_dir, started)
            if self.spec.test:
                self._test(trial, log_dir, checkpoint_dir, device)
        finally:
            if not self.stop.is_set():  # in the study, so the report reads the same on every machine
                trial.set_user_attr(FACTS_ATTR, trial_facts(log_dir))
        minutes = (time.monotonic() - started) / 60
        self.say(f"trial {trial.number} finished: best {self.spec.metric} {best:.4f} ({minutes:.1f} min)")
        return best

    def _outcome(self, trial: optuna.Trial, code: int, log_dir: Path, started: float) -> float:
        """The trial's best metric; raises :class:`TrialFailed`, or ``TrialPruned`` when the pruner stopped it."""
        if code != 0:
            reason = last_error(log_dir / "fit.log", code)
            trial.set_user_attr("error", reason)
            self.say(f"trial {trial.number} failed: {reason} (see {log_dir / 'fit.log'})")
            raise TrialFailed(reason)
        frozen = self.storage.get_trial(trial_id(trial))
        values = frozen.intermediate_values
        if not values:
            reason = f"{self.spec.metric} was never logged (validation metrics: val/acc, val/acc_top5, val/loss)"
            trial.set_user_attr("error", reason)
            self.say(f"trial {trial.number} failed: {reason}")
            raise TrialFailed(reason)
        best = max(values.values()) if self.spec.direction == "maximize" else min(values.values())
        if PRUNED_ATTR in frozen.user_attrs:
            self.say(
                f"trial {trial.number} pruned at epoch {frozen.user_attrs[PRUNED_ATTR]}: best "
                f"{self.spec.metric} {best:.4f} ({(time.monotonic() - started) / 60:.1f} min)"
            )
            raise optuna.TrialPruned(f"pruned at epoch {frozen.user_attrs[PRUNED_ATTR]}")
        return best

    def _test(self, trial: optuna.Trial, log_dir: Path, checkpoint_dir: Path, device: str | None) -> None:
        """Tests the trial's last.ckpt with its config.yaml (all the fit was given); logs to ``trial_NNN_test``."""
        code = self._run(test_command(log_dir, checkpoint_dir, trial.number), log_dir / "test.log", device)
        if self.stop.is_set() or code in INTERRUPTED:
            raise TrialInterrupted(f"stopped during test (exit status {code})")
        if code != 0:
            reason = "test: " + last_error(log_dir / "test.log", code)
            trial.set_user_attr("error", reason)
            self.say(f"trial {trial.number} failed: {reason}")
            raise TrialFailed(reason)

    def _resume_checkpoint(self, trial: optuna.Trial) -> str | None:
        """A re-queued trial continues from the ``last.ckpt`` its cut-off predecessor left, if any.

        Looked for under this machine's checkpoint root (a shared one may be mounted elsewhere on
        the machine that ran the predecessor). The resumed fit ends with the weights of an
        uninterrupted one (the data module resumes mid-epoch exactly); it logs from the resumed
        step on, in the new trial's folder.
        """
        for number in reversed(retry_history(self.storage.get_trial(trial_id(trial)))):
            path = self.checkpoint_root / self.spec.name / trial_name(number) / "last.ckpt"
            if path.is_file():
                return str(path)
        return None

    # ------------------------------------------------------------------ processes
    def _run(self, command: list[str], output: Path, device: str | None) -> int:
        import subprocess

        output.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        package_root = str(Path(mobilenet_lab.__file__).resolve().parents[1])  # the children import this copy
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env[STORAGE_ENV] = self.url
        env[PARENT_ENV] = str(os.getpid())
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        env.update(cpu_threads_env(self.workers, env))
        with open(output, "ab") as log:
            log.write(f"$ {shown(command)}\n".encode())
            log.flush()
            # Own session: a Ctrl+C reaches the sweep, which forwards one signal to each fit.
            child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            with self._lock:
                self._children[child.pid] = child
            try:
                if self.stop.is_set():
                    child.send_signal(self.signal or signal.SIGTERM)
                return child.wait()
            finally:
                with self._lock:
                    self._children.pop(child.pid, None)
