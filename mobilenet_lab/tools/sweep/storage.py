"""Where a sweep lives: an Optuna RDB storage (SQLite file or a database server) and its study.

Several workers share one study through the storage; these helpers make that safe:

- SQLite: every transaction begins ``IMMEDIATE`` (SQLAlchemy's recipe for pysqlite). Optuna hands
  a queued trial to a worker by reading it and marking it running; SQLite ignores ``SELECT ... FOR
  UPDATE``, and pysqlite's deferred transactions let two processes both take the same trial.
  Study creation (tables, study, grid queue) runs under a lock file beside the database.
- Dead workers: Optuna's heartbeat marks a trial failed when its worker stopped beating (any
  machine), and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback` queues it again. A
  worker that died on this machine is recognised at once (host, pid and start time recorded with
  each trial), so re-running a killed sweep continues without waiting for the heartbeat to expire.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ...errors import UserError
from .spec import SweepSpec, build_pruner, build_sampler

__all__ = ["AskLock", "open_storage", "open_study", "reap_dead_workers", "fail_stale_trials", "worker_id",
           "safe_url", "default_storage", "requeue", "retry_history", "HEARTBEAT_S", "GRACE_S"]

#: Seconds between a running trial's heartbeats, and without one before another worker fails it.
HEARTBEAT_S = 10
GRACE_S = 60
#: Study attribute holding the sweep spec (:meth:`SweepSpec.stored`), written once the grid is queued.
SPEC_ATTR = "sweep"


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queues a cut-off trial again with the same values and its reported metric so far (Optuna's retry callback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, trial)


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The numbers of the failed trials this one repeats, oldest first (empty for a first try)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


def default_storage(name: str) -> str:
    return f"sqlite:///sweeps/{name}.db"


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has nothing to hide
        return url


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise UserError(f"--storage {url}: an in-memory database cannot be shared with the trials' processes; "
                        "use a file, e.g. sqlite:///sweeps/<name>.db")
    return Path(parsed.database)


@contextlib.contextmanager
def setup_lock(url: str) -> Iterator[None]:
    """Serialises study setup between processes on this machine (SQLite); a server database needs none."""
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    import fcntl

    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class AskLock:
    """Makes "look at the study, then take a trial" one step for this machine's workers.

    A worker decides from the study's trials whether a trial is left to start, then Optuna's
    ``ask`` takes one: two workers doing both at once could run a search past ``n_trials`` or find
    a grid's last point gone. Threads of one sweep process share a lock; with SQLite, sweep
    processes on the machine also share a lock file. Workers on other machines (a server database)
    are not covered: there a search may run a trial more than ``n_trials``, as Optuna's own may.
    Acquire before the look; release once the trial is taken (or taking it failed).
    """

    def __init__(self, url: str) -> None:
        self._thread_lock = threading.Lock()
        path = _sqlite_path(url)
        self._path = path.with_name(path.name + ".ask.lock") if path is not None else None
        self._file: Any = None

    def acquire(self) -> None:
        self._thread_lock.acquire()
        if self._path is not None:
            import fcntl

            self._file = open(self._path, "a")  # noqa: SIM115 - held until release()
            fcntl.flock(self._file, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self._thread_lock.release()


def open_storage(url: str, heartbeat: bool = True) -> RDBStorage:
    """An Optuna RDB storage, or one line saying why ``url`` cannot be opened.

    With ``heartbeat`` (sweep workers) running trials beat every :data:`HEARTBEAT_S` seconds and
    a trial without a beat for :data:`GRACE_S` seconds is failed and queued again.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import make_url

    shown = safe_url(url)
    try:
        backend = make_url(url).get_backend_name()
    except Exception as err:  # noqa: BLE001 - sqlalchemy's ArgumentError
        raise UserError(f"--storage {shown}: not a database URL ({err}); use sqlite:///sweeps/<name>.db "
                        "or e.g. postgresql://user:password@host/db") from None
    path = _sqlite_path(url)
    kwargs: dict[str, Any] = {}
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--storage {shown}: cannot create {path.parent} ({err.strerror})") from None
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # wait for a busy database, not fail
    if heartbeat:
        kwargs.update(heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, heartbeat_stale_trial_callback=requeue)
    try:
        with warnings.catch_warnings(), setup_lock(url):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(url, **kwargs)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - missing driver, unreachable server, unwritable file...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = f" (install the {backend} driver)" if isinstance(err, ImportError) or "plugin" in reason else ""
        raise UserError(f"--storage {shown}: cannot open the database{hint}: {reason[:200]}") from None
    if path is not None:
        @event.listens_for(storage.engine, "connect")
        def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        storage.engine.dispose()  # reconnect with the listeners
    return storage


def open_study(spec: SweepSpec, storage: RDBStorage, url: str, log_root: Path, checkpoint_root: Path,
               wait_s: float = 120.0) -> tuple[optuna.Study, bool]:
    """Creates the sweep's study (and queues a grid's points) or joins the existing one.

    Returns (study, created). Joining checks that the sweep file still describes the study's
    sweep; points added to a grid are queued.
    """
    with setup_lock(url):
        exists = spec.name in optuna.study.get_all_study_names(storage)
        if not exists:
            trials = log_root / spec.name
            if trials.is_dir() and any(trials.glob("trial_*")):
                raise UserError(f"{trials} holds trials of an earlier sweep named {spec.name!r} that is not in "
                                f"{safe_url(url)}; move them away or give this sweep another --name")
        try:
            study = optuna.create_study(study_name=spec.name, storage=storage, direction=spec.direction,
                                        sampler=build_sampler(spec), pruner=build_pruner(spec))
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=spec.name, storage=storage, sampler=build_sampler(spec),
                                      pruner=build_pruner(spec))
            created = False
        if created:
            study.set_user_attr("log_root", str(log_root))
            study.set_user_attr("checkpoint_root", str(checkpoint_root))
            queue_grid(study, spec)
            study.set_user_attr(SPEC_ATTR, spec.stored())  # last: joiners wait for it
            return study, True
    stored = _wait_for_spec(study, url, wait_s)
    if study.direction.name.lower() != spec.direction:
        raise UserError(f"sweep {spec.name!r} in {safe_url(url)} was created to {study.direction.name.lower()} "
                        f"its metric; use another --name for a new sweep")
    diffs = spec.differences(stored)
    if diffs:
        raise UserError(f"sweep {spec.name!r} in {safe_url(url)} was created from another sweep file (differs in: "
                        f"{', '.join(diffs)}); restore the file, or give the new sweep another --name")
    added = queue_grid(study, spec)
    if added:
        study.set_user_attr(SPEC_ATTR, spec.stored())
        print(f"[sweep {spec.name}] {added} grid point(s) queued: new, or failed in an earlier run")
    return study, False


def _wait_for_spec(study: optuna.Study, url: str, wait_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is not None:
            return stored
        if time.monotonic() > deadline:
            raise UserError(f"study {study.study_name!r} in {safe_url(url)} has no sweep description (created by "
                            "another tool, or its creation was interrupted); delete it with `optuna delete-study "
                            f"--study-name {study.study_name} --storage <url>` or use another --name")
        time.sleep(1.0)


def queue_grid(study: optuna.Study, spec: SweepSpec) -> int:
    """Queues each grid point that no trial holds yet, or whose trials all failed; returns how many.

    So a new sweep queues its grid, a grown grid its new points, and a re-run retries the points
    that failed (once per run: a failure during the run is not retried until the next).
    """
    if not spec.is_grid:
        return 0
    have = {_key(t.user_attrs.get("grid_params") or t.params) for t in study.get_trials(deepcopy=False)
            if t.state != TrialState.FAIL}
    added = 0
    for point in spec.grid_points():
        if _key(point) not in have:
            study.enqueue_trial(point, user_attrs={"grid_params": point})
            added += 1
    return added


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


# --------------------------------------------------------------------------- dead workers
def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_id() -> dict[str, Any]:
    """This process as recorded with each trial it runs."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_ticks(os.getpid())}


def _alive(worker: dict[str, Any]) -> bool:
    pid = int(worker.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    start = _start_ticks(pid)
    return start is None or worker.get("start") is None or start == worker["start"]


def reap_dead_workers(study: optuna.Study, storage: RDBStorage) -> list[int]:
    """Fails the running trials whose worker was a process of this machine that is gone, and queues them again."""
    me = socket.gethostname()
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or worker.get("host") != me or _alive(worker):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        requeue(study, storage.get_trial(trial._trial_id))
        reaped.append(trial.number)
    return reaped


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's heartbeat check (fails and re-queues trials of workers that stopped beating)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
