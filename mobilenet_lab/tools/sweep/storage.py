"""Where a sweep lives: an Optuna RDB storage (a SQLite file, or a PostgreSQL server for several machines).

Several workers, on one machine or many, share one study through the storage; these helpers make that safe:

- :class:`StudyLock` lets one holder at a time through, across threads, processes and machines: a
  lock file beside a SQLite database, a PostgreSQL advisory lock on a server (the server drops it
  when its holder's connection dies). It guards the setup (tables, study, a grid's queue: several
  machines creating the tables at once fail with a unique violation on ``pg_type``) and each
  worker's "look at the study, then take a trial", so a grid point runs once and a search runs
  exactly ``n_trials`` trials over all machines. Other databases are refused: they have no such lock.
- SQLite: every transaction begins ``IMMEDIATE`` (SQLAlchemy's recipe for pysqlite). Optuna hands
  a queued trial to a worker by reading it and marking it running; SQLite ignores ``SELECT ... FOR
  UPDATE``, and pysqlite's deferred transactions let two processes both take the same trial.
- Dead workers: Optuna's heartbeat. The sweep process beats for each trial it runs; a trial
  without a beat for :data:`GRACE_S` seconds is failed by any worker (any machine, judged by the
  database's clock) and queued again by :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from ...errors import UserError
from .spec import SweepSpec, build_pruner, build_sampler

__all__ = [
    "StudyLock",
    "open_storage",
    "open_study",
    "queue_grid",
    "grid_key",
    "fail_stale_trials",
    "safe_url",
    "default_storage",
    "requeue",
    "retry_history",
    "HEARTBEAT_S",
    "GRACE_S",
]

#: Seconds between a running trial's heartbeats, and without one before another worker fails it.
HEARTBEAT_S = int(os.environ.get("MOBILENET_LAB_SWEEP_HEARTBEAT_S", "10"))
GRACE_S = int(os.environ.get("MOBILENET_LAB_SWEEP_GRACE_S", "60"))
#: Study attribute holding the sweep spec (:meth:`SweepSpec.stored`), written once the grid is queued.
SPEC_ATTR = "sweep"
#: What installs each server's driver (SQLAlchemy 2 reaches ``postgresql://`` through psycopg 3).
DRIVERS = {"postgresql": 'pip install -e ".[postgres]" (psycopg[binary])'}


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queues a cut-off trial again with the same values and its reported metric so far (Optuna's retry callback)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)(study, trial)


def _requeue_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    requeue(study, trial)
    print(
        f"[sweep {study.study_name}] trial {trial.number}: no heartbeat from its worker for {GRACE_S} s; "
        "marked failed and queued again",
        flush=True,
    )


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The numbers of the failed trials this one repeats, oldest first (empty for a first try)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's heartbeat check: fails (and queues again) the trials whose worker stopped beating.

    Optuna runs it only before a worker takes a trial; a worker waiting for others' trials calls it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


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
        raise UserError(
            f"--storage {url}: an in-memory database cannot be shared with the trials' processes; "
            "use a file, e.g. sqlite:///sweeps/<name>.db"
        )
    return Path(parsed.database)


class StudyLock:
    """A lock named ``name`` on the database ``url``, for this process's threads and every other process.

    A file lock beside a SQLite database (``<db>.<name>.lock``), else a PostgreSQL advisory lock held
    by a connection of its own. Use ``with``, or :meth:`acquire` and :meth:`release` (from one thread).
    """

    def __init__(self, url: str, name: str) -> None:
        self._url, self._thread_lock, self._held = url, threading.Lock(), None
        path = _sqlite_path(url)
        self._path = path.with_name(f"{path.name}.{name}.lock") if path is not None else None
        # Advisory locks are named by a 64-bit number: a hash of the name.
        self._key = int.from_bytes(
            hashlib.sha256(f"mobilenet_lab sweep {name}".encode()).digest()[:8], "big", signed=True
        )
        self._engine: Any = None

    def acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._path is not None:
                import fcntl

                self._held = open(self._path, "a")  # noqa: SIM115 - closed in release()
                fcntl.flock(self._held, fcntl.LOCK_EX)
            else:
                import sqlalchemy

                if self._engine is None:
                    self._engine = sqlalchemy.create_engine(self._url, poolclass=sqlalchemy.pool.NullPool)
                self._held = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                self._held.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        try:
            if self._held is not None:
                self._held.close()  # closing the file or the session releases its lock
        finally:
            self._held = None
            self._thread_lock.release()

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


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
        raise UserError(
            f"--storage {shown}: not a database URL ({err}); use sqlite:///sweeps/<name>.db "
            "or e.g. postgresql://user:password@host/db"
        ) from None
    if backend not in ("sqlite", "postgresql"):
        raise UserError(
            f"--storage {shown}: a sweep keeps its study in SQLite (one machine, sqlite:///sweeps/"
            "<name>.db) or PostgreSQL (several, postgresql://user:password@host/db), whose locks it "
            f"relies on; not {backend}"
        )
    path = _sqlite_path(url)
    kwargs: dict[str, Any] = {}
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--storage {shown}: cannot create {path.parent} ({err.strerror})") from None
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}  # wait for a busy database, not fail
    if heartbeat:
        kwargs.update(
            heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, heartbeat_stale_trial_callback=_requeue_stale
        )
    try:
        with warnings.catch_warnings(), StudyLock(url, "setup"):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(url, **kwargs)
    except Exception as err:  # noqa: BLE001 - missing driver, unreachable server, unwritable file...
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, ImportError):
            reason = f"its driver is missing: {DRIVERS.get(backend, f'install the {backend} driver')}"
        raise UserError(f"--storage {shown}: cannot open the database: {reason[:200]}") from None
    if path is not None:

        @event.listens_for(storage.engine, "connect")
        def _no_implicit_transactions(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        storage.engine.dispose()  # reconnect with the listeners
    return storage


def open_study(spec: SweepSpec, storage: RDBStorage, url: str, log_root: Path) -> tuple[optuna.Study, bool]:
    """Creates the sweep's study (and queues a grid's points) or joins the existing one.

    Returns (study, created). Joining checks that the sweep file still describes the study's
    sweep; points added to a grid, or whose trials all failed, are queued.
    """
    with StudyLock(url, "setup"):
        if spec.name not in optuna.study.get_all_study_names(storage):
            trials = log_root / spec.name
            if trials.is_dir() and any(trials.glob("trial_*")):
                raise UserError(
                    f"{trials} holds trials of an earlier sweep named {spec.name!r} that is not in "
                    f"{safe_url(url)}; move them away or give this sweep another --name"
                )
            study = optuna.create_study(
                study_name=spec.name,
                storage=storage,
                direction=spec.direction,
                sampler=build_sampler(spec),
                pruner=build_pruner(spec),
            )
            queue_grid(study, spec)
            study.set_user_attr(SPEC_ATTR, spec.stored())
            return study, True
        study = optuna.load_study(
            study_name=spec.name, storage=storage, sampler=build_sampler(spec), pruner=build_pruner(spec)
        )
        stored = study.user_attrs.get(SPEC_ATTR)
        if stored is None:  # its creation was interrupted (the lock keeps others from seeing it half-made)
            raise UserError(
                f"study {spec.name!r} in {safe_url(url)} has no sweep description (created by another "
                "tool, or its creation was interrupted); delete it with `optuna delete-study "
                f"--study-name {spec.name} --storage <url>` or use another --name"
            )
        if study.direction.name.lower() != spec.direction:
            raise UserError(
                f"sweep {spec.name!r} in {safe_url(url)} was created to {study.direction.name.lower()} "
                f"its metric; use another --name for a new sweep"
            )
        diffs = spec.differences(stored)
        if diffs:
            raise UserError(
                f"sweep {spec.name!r} in {safe_url(url)} was created from another sweep file (differs "
                f"in: {', '.join(diffs)}); restore the file, or give the new sweep another --name"
            )
        added = queue_grid(study, spec)
        if added:
            study.set_user_attr(SPEC_ATTR, spec.stored())
            print(f"[sweep {spec.name}] {added} grid point(s) queued: new, or failed in an earlier run")
    return study, False


def queue_grid(study: optuna.Study, spec: SweepSpec) -> int:
    """Queues each grid point that no trial holds yet, or whose trials all failed; returns how many.

    So a new sweep queues its grid, a grown grid its new points, and a re-run retries the points
    that failed (once per run: a failure during the run is not retried until the next).
    """
    if not spec.is_grid:
        return 0
    have = {grid_key(t) for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL}
    added = 0
    for point in spec.grid_points():
        if json.dumps(point, sort_keys=True) not in have:
            study.enqueue_trial(point, user_attrs={"grid_params": point})
            added += 1
    return added


def grid_key(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's point (a grid's queued values, else its parameters) as one comparable string."""
    return json.dumps(trial.user_attrs.get("grid_params") or trial.params, sort_keys=True)
