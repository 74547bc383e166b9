"""The workspace: one DuckDB database (metadata, runs, small tables) plus per-run .npy / .parquet side files.

Big arrays live in memory-mappable .npy files next to the database (ECOSYSTEM.md: 10-100× faster
than DuckDB for them). Every stored computation goes through `Workspace.compute_once`: a complete run
whose files check out is returned as is; otherwise the caller takes the run's lease (owner + heartbeat;
a second caller waits, a dead owner's lease expires), computes, and the run becomes `complete` in one
transaction only after its files are durable, with their sizes recorded so a missing or truncated file
later demotes it to `failed`. One connection per process, serialized by a lock and released after a
second idle, so the dashboard and the CLI can share one workspace file (DuckDB lets one process open it
at a time; the other retries on its lock).
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import duckdb
import numpy as np
import pandas as pd

DEFAULT_WORKSPACE = Path(os.environ.get("NPEFF_WORKSPACE", Path(__file__).resolve().parent.parent / "workspace"))
RUN_STATUSES = ("pending", "running", "complete", "failed")
HEARTBEAT_S = 5.0  # a computing run's owner renews its lease this often
LEASE_S = 90.0  # a lease without a heartbeat for this long has expired (its owner is presumed dead)
WAIT_POLL_S = 1.0  # how often a caller waiting for another owner's run looks again

MIGRATIONS: list[str] = [
    # v1: models, datasets, examples, runs and their chunks
    """
    CREATE TABLE models (
        id VARCHAR PRIMARY KEY, name VARCHAR, source VARCHAR, input_kind VARCHAR,
        label_names VARCHAR, n_parameters BIGINT, created TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE datasets (
        id VARCHAR PRIMARY KEY, name VARCHAR, source VARCHAR, input_kind VARCHAR,
        n_examples BIGINT, label_names VARCHAR, created TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE examples (
        dataset_id VARCHAR, idx BIGINT, text VARCHAR, label BIGINT, PRIMARY KEY (dataset_id, idx));
    CREATE TABLE runs (
        id VARCHAR PRIMARY KEY, kind VARCHAR, key VARCHAR UNIQUE, model_id VARCHAR, dataset_id VARCHAR,
        params VARCHAR, status VARCHAR, error VARCHAR, summary VARCHAR,
        created TIMESTAMP DEFAULT current_timestamp, updated TIMESTAMP DEFAULT current_timestamp);
    CREATE TABLE run_chunks (
        run_id VARCHAR, chunk BIGINT, n_rows BIGINT, PRIMARY KEY (run_id, chunk));
    """,
    # v2: run leases (owner, heartbeat), the files of a complete run with their sizes, chunk example ranges
    """
    ALTER TABLE runs ADD COLUMN owner VARCHAR;
    ALTER TABLE runs ADD COLUMN heartbeat TIMESTAMP;
    ALTER TABLE runs ADD COLUMN files VARCHAR;
    ALTER TABLE run_chunks ADD COLUMN start BIGINT;
    """,
    # v3: background jobs (analysis/jobs.py): what to run, its process, progress and outcome
    """
    CREATE TABLE jobs (
        id VARCHAR PRIMARY KEY, kind VARCHAR, spec VARCHAR, status VARCHAR, step BIGINT, total BIGINT,
        message VARCHAR, stage VARCHAR, stage_started TIMESTAMP, created TIMESTAMP DEFAULT current_timestamp,
        started TIMESTAMP, heartbeat TIMESTAMP, finished TIMESTAMP, host VARCHAR, pid BIGINT,
        cancel_requested BOOLEAN DEFAULT false, error VARCHAR, result VARCHAR);
    """,
    # v4: what a running job records as it goes (the fit's loss by iteration), read by the live loss curve
    """
    CREATE TABLE job_points (
        job_id VARCHAR, series VARCHAR, step BIGINT, value DOUBLE, PRIMARY KEY (job_id, series, step));
    """,
    # v5: a researcher's name, tags (JSON list) and note for a component of a decomposition (analysis/notes.py)
    """
    CREATE TABLE component_notes (
        run_id VARCHAR, component BIGINT, name VARCHAR, tags VARCHAR, note VARCHAR, updated TIMESTAMP,
        PRIMARY KEY (run_id, component));
    """,
]
JOB_STATUSES = ("queued", "running", "complete", "failed", "cancelled")
JOB_ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Run:
    """One computation (PEFs, a decomposition, a perturbation sweep...) and where its arrays live."""

    id: str
    kind: str
    key: str
    model_id: str | None
    dataset_id: str | None
    params: dict
    status: str
    error: str | None
    summary: dict
    owner: str | None = None  # lease holder "host:pid:token" while running
    heartbeat: float | None = None  # seconds since the lease was last renewed (None: never)
    files: dict | None = None  # {file name: bytes} of a complete run (None for runs stored before v2)


S = TypeVar("S", bound="Summary")


@dataclass(frozen=True)
class Summary:
    """Base of the typed summaries runs store (as JSON); `of(run)` reads one back."""

    @classmethod
    def of(cls: type[S], run: Run) -> S:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in run.summary.items() if k in names})


@dataclass(frozen=True)
class ArraysSummary(Summary):
    """A small computation stored as named arrays (indices, maps, profiles...)."""

    arrays: list[str]


def new_owner() -> str:
    """A lease owner id unique to this call: host, process and a random token."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _owner_alive(owner: str) -> bool:
    """False when the owner is a process of this host that no longer exists (killed); else True."""
    host, pid, _ = owner.split(":")
    return host != socket.gethostname() or pid_alive(int(pid))


class RunWriter:
    """What a computation inside `compute_once` writes its results through; remembers the files it saved."""

    def __init__(self, ws: "Workspace", run: Run):
        self.ws, self.run = ws, run
        self.saved: dict[str, int] = {}  # file name -> bytes, the outputs of this call

    def save_array(self, name: str, array: np.ndarray) -> Path:
        path = self.ws.save_array(self.run.id, name, array)
        self.saved[path.name] = path.stat().st_size
        return path

    def save_arrays(self, arrays: dict[str, Any]) -> None:
        for name, array in arrays.items():
            self.save_array(name, np.asarray(array))

    def save_array_parts(self, name: str, parts: list[np.ndarray]) -> Path:
        path = self.ws.save_array_parts(self.run.id, name, parts)
        self.saved[path.name] = path.stat().st_size
        return path

    def save_table(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.ws.save_table(self.run.id, name, frame)
        self.saved[path.name] = path.stat().st_size
        return path


def run_key(kind: str, params: dict) -> str:
    """Content key of a computation: same kind and parameters -> same key -> computed once."""
    blob = json.dumps({"kind": kind, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _is_lock_error(error: Exception) -> bool:
    """DuckDB's "another process holds the file" (not "could not read block", which also says 'lock')."""
    text = str(error)
    return "Could not set lock" in text or "Conflicting lock" in text


class Workspace:
    """A folder holding `npeff.duckdb` and `arrays/<run_id>/*.npy`."""

    def __init__(self, root: Path | str = DEFAULT_WORKSPACE, *, lock_timeout_s: float = 30.0,
                 idle_close_s: float = 1.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "npeff.duckdb"
        self.lock_timeout_s = lock_timeout_s
        self.idle_close_s = idle_close_s
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._closer: threading.Timer | None = None
        atexit.register(self.close)
        self._create_database()
        self.migrate()

    def _create_database(self) -> None:
        """A new workspace's database file appears whole: made under a private name, then hard-linked into place.

        DuckDB opening a missing file creates it and writes its header only after; a second process (another
        torchrun rank) opening it meanwhile read an empty header, or recreated and truncated it.
        """
        if self.db_path.exists():
            return
        fresh = self.db_path.with_name(f".{self.db_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
        try:
            duckdb.connect(str(fresh)).close()
            try:
                os.link(fresh, self.db_path)
            except OSError:  # another process linked its file first (that one stays), or a filesystem without
                pass  # hard links, where DuckDB creates the file in place as before
        finally:
            fresh.unlink(missing_ok=True)
            fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)

    # -- connections -----------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.db_path))
            except duckdb.Error as e:
                if not _is_lock_error(e):
                    raise RuntimeError(f"{self.db_path}: not a readable workspace database "
                                       f"({str(e).splitlines()[0]}); move the file away to start an empty workspace "
                                       "here, or choose another workspace folder") from e
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.db_path}: workspace is locked by another process for more than "
                                       f"{self.lock_timeout_s:.0f} s; close it or use another workspace folder") from e
                time.sleep(0.05)

    def _close_if_idle(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def close(self) -> None:
        """Release the database file now (it is also released after `idle_close_s` without use)."""
        if self._closer is not None:
            self._closer.cancel()
        self._close_if_idle()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The process's connection, serialized by a lock; released when idle so other processes can write."""
        with self._lock:
            if self._closer is not None:
                self._closer.cancel()
            if self._con is None:
                self._con = self._open()
            try:
                yield self._con
            finally:
                self._closer = threading.Timer(self.idle_close_s, self._close_if_idle)
                self._closer.daemon = True
                self._closer.start()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All statements inside commit together or not at all."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    # -- schema ------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self.connect() as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER)")
            row = con.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    def migrate(self, migrations: list[str] = MIGRATIONS) -> int:
        """Apply migrations newer than the stored version, each in its own transaction."""
        current = self.schema_version()
        if current > len(migrations):
            raise RuntimeError(f"{self.db_path}: schema version {current} is newer than this code "
                               f"({len(migrations)}); update NPEFF Explorer or use another workspace")
        for version, sql in enumerate(migrations[current:], start=current + 1):
            with self.transaction() as con:
                con.execute(sql)
                con.execute("INSERT INTO schema_version VALUES (?)", [version])
        return len(migrations)

    # -- models and datasets ---------------------------------------------------------------------
    def register_model(self, *, id: str, name: str, source: str, input_kind: str, label_names: list[str],
                       n_parameters: int) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO models (id, name, source, input_kind, label_names, n_parameters) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [id, name, source, input_kind, json.dumps(label_names), n_parameters])

    def register_dataset(self, *, id: str, name: str, source: str, input_kind: str, label_names: list[str],
                         texts: list[str] | None, labels: np.ndarray) -> None:
        """Store a dataset's examples (text and label; images stay in their side file)."""
        frame = pd.DataFrame({"dataset_id": id, "idx": np.arange(len(labels), dtype=np.int64),
                              "text": texts if texts is not None else [None] * len(labels),
                              "label": np.asarray(labels, dtype=np.int64)})
        with self.transaction() as con:
            con.execute("DELETE FROM examples WHERE dataset_id = ?", [id])
            con.register("frame", frame)
            con.execute("INSERT INTO examples SELECT dataset_id, idx, text, label FROM frame")
            con.execute("INSERT OR REPLACE INTO datasets (id, name, source, input_kind, n_examples, label_names) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        [id, name, source, input_kind, len(labels), json.dumps(label_names)])

    def models(self) -> pd.DataFrame:
        return self.query("SELECT * FROM models ORDER BY created")

    def datasets(self) -> pd.DataFrame:
        return self.query("SELECT * FROM datasets ORDER BY created")

    def examples(self, dataset_id: str, indices: list[int] | None = None) -> pd.DataFrame:
        if indices is None:
            return self.query("SELECT idx, text, label FROM examples WHERE dataset_id = ? ORDER BY idx", [dataset_id])
        return self.query("SELECT idx, text, label FROM examples WHERE dataset_id = ? AND list_contains(?, idx) "
                          "ORDER BY idx", [dataset_id, [int(i) for i in indices]])

    # -- runs ------------------------------------------------------------------------------------
    _RUN_COLUMNS = ("id, kind, key, model_id, dataset_id, params, status, error, summary, owner, "
                    "epoch(current_timestamp::TIMESTAMP) - epoch(heartbeat), files")

    def _run_from_row(self, row: tuple) -> Run:
        id_, kind, key, model_id, dataset_id, params, status, error, summary, owner, age, files = row
        return Run(id=id_, kind=kind, key=key, model_id=model_id, dataset_id=dataset_id,
                   params=json.loads(params), status=status, error=error, summary=json.loads(summary or "{}"),
                   owner=owner, heartbeat=None if age is None else float(age),
                   files=None if files is None else json.loads(files))

    def get_run(self, run_id: str) -> Run:
        with self.connect() as con:
            row = con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", [run_id]).fetchone()
        if row is None:
            raise KeyError(f"no run '{run_id}' in workspace {self.root}")
        return self._run_from_row(row)

    def find_run(self, kind: str, params: dict) -> Run | None:
        with self.connect() as con:
            row = con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE key = ?",
                              [run_key(kind, params)]).fetchone()
        return None if row is None else self._run_from_row(row)

    def start_run(self, kind: str, params: dict, *, model_id: str | None = None,
                  dataset_id: str | None = None, owner: str | None = None) -> Run:
        """The run for (kind, params): a complete one is returned as is; otherwise it is (re)marked running,
        leased to `owner`. The primitive under `compute_once`, which adds waiting and file checks."""
        key = run_key(kind, params)
        with self.transaction() as con:
            row = con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE key = ?", [key]).fetchone()
            if row is None:
                con.execute("INSERT INTO runs (id, kind, key, model_id, dataset_id, params, status, owner, heartbeat) "
                            "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, current_timestamp)",
                            [uuid.uuid4().hex[:12], kind, key, model_id, dataset_id,
                             json.dumps(params, sort_keys=True, default=str), owner])
            elif row[6] != "complete":
                con.execute("UPDATE runs SET status = 'running', error = NULL, owner = ?, heartbeat = current_timestamp, "
                            "updated = current_timestamp WHERE key = ?", [owner, key])
            row = con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE key = ?", [key]).fetchone()
        return self._run_from_row(row)

    def fail_run(self, run_id: str, error: str) -> None:
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'failed', error = ?, owner = NULL, updated = current_timestamp "
                        "WHERE id = ? AND status <> 'complete'", [error, run_id])

    def complete_run(self, run_id: str, summary: dict | Summary, expected_arrays: list[str] = (),
                     files: dict[str, int] | None = None) -> None:
        """Mark complete in one transaction, after checking the run's files are on disk.

        files: {file name: bytes} of the run's outputs (default: the expected arrays as they are now); they
        are recorded, and checked again whenever the run is reused.
        """
        missing = [n for n in expected_arrays if not self.array_path(run_id, n).exists()]
        if missing:
            raise RuntimeError(f"run {run_id}: arrays {missing} are missing; the run stays incomplete")
        if files is None:
            files = {self.array_path(run_id, n).name: self.array_path(run_id, n).stat().st_size
                     for n in expected_arrays}
        if isinstance(summary, Summary):
            summary = asdict(summary)
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'complete', summary = ?, error = NULL, owner = NULL, files = ?, "
                        "updated = current_timestamp WHERE id = ?",
                        [json.dumps(summary, default=str), json.dumps(files), run_id])

    def heartbeat(self, run_id: str, owner: str) -> bool:
        """Renew the lease; False when `owner` no longer holds it."""
        with self.transaction() as con:
            row = con.execute("SELECT owner, status FROM runs WHERE id = ?", [run_id]).fetchone()
            if row is None or row[0] != owner or row[1] != "running":
                return False
            con.execute("UPDATE runs SET heartbeat = current_timestamp WHERE id = ?", [run_id])
        return True

    def file_problem(self, run: Run) -> str | None:
        """Why a complete run's files cannot be used (missing or of the wrong size, the file named); None if fine."""
        folder = self.root / "arrays" / run.id
        if run.files is None:  # stored before sizes were recorded: every .npy must at least open
            for path in sorted(folder.glob("*.npy")):
                try:
                    np.load(path, mmap_mode="r")
                except (OSError, ValueError) as e:
                    return f"{path}: unreadable ({e})"
            return None
        for name, size in sorted(run.files.items()):
            path = folder / name
            if not path.exists():
                return f"{path}: missing"
            if path.stat().st_size != size:
                return f"{path}: {path.stat().st_size:,} bytes, expected {size:,} (truncated or overwritten)"
        return None

    def _lease_is_live(self, run: Run) -> bool:
        return (run.status == "running" and run.owner is not None and run.heartbeat is not None
                and run.heartbeat < LEASE_S and _owner_alive(run.owner))

    def _claim(self, kind: str, params: dict, owner: str, model_id: str | None,
               dataset_id: str | None) -> tuple[Run, bool]:
        """(run, True) when the caller now holds the run's lease; (run, False) when it is complete and its files
        check out, or another live owner computes it (run.status says which)."""
        with self._lock:
            run = self.find_run(kind, params)
            if run is not None and run.status == "complete":
                problem = self.file_problem(run)
                if problem is None:
                    return run, False
                self.demote_run(run.id, problem)
            elif run is not None and self._lease_is_live(run):
                return run, False
            return self.start_run(kind, params, model_id=model_id, dataset_id=dataset_id, owner=owner), True

    def demote_run(self, run_id: str, reason: str) -> None:
        """A complete run whose files are gone becomes failed (the reason names the file), so it is recomputed."""
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'failed', error = ?, owner = NULL, updated = current_timestamp "
                        "WHERE id = ?", [f"{reason}; recomputed on the next request", run_id])

    def compute_once(self, kind: str, params: dict, compute: Callable[[RunWriter], Summary | dict], *,
                     model_id: str | None = None, dataset_id: str | None = None,
                     on_wait: Callable[[Run], None] | None = None) -> Run:
        """The one lifecycle of a stored computation, keyed by (kind, params).

        A complete run whose files check out is returned as is. A run another live owner is computing is
        waited for (on_wait(run) each poll). Otherwise this call takes the lease, renews it while
        `compute(writer)` runs, and marks the run complete with the summary compute returns and the files it
        saved through the writer; any exception marks it failed with the message, and is re-raised.
        """
        owner = new_owner()
        while True:
            run, claimed = self._claim(kind, params, owner, model_id, dataset_id)
            if claimed or run.status == "complete":
                break
            if on_wait is not None:
                on_wait(run)
            self.close()  # let the owner's process write meanwhile
            time.sleep(WAIT_POLL_S)
        if not claimed:
            return run
        writer = RunWriter(self, run)
        with self._heartbeats(run.id, owner):
            try:
                summary = compute(writer)
                self.complete_run(run.id, summary, files=writer.saved)
            except BaseException as e:
                self.fail_run(run.id, f"{type(e).__name__}: {e}")
                raise
        return self.get_run(run.id)

    def _heartbeats(self, run_id: str, owner: str):
        """Renew the run's lease every HEARTBEAT_S seconds while the block runs."""
        return repeating(HEARTBEAT_S, lambda: self.heartbeat(run_id, owner), f"lease-{run_id}")

    def runs(self, kind: str | None = None, status: str | None = None) -> pd.DataFrame:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if kind:
            sql, args = sql + " AND kind = ?", args + [kind]
        if status:
            sql, args = sql + " AND status = ?", args + [status]
        return self.query(sql + " ORDER BY created", args)

    def decomposition_runs(self, model_id: str, dataset_id: str, *, complete_only: bool = True) -> pd.DataFrame:
        """NPEFF runs of a model and dataset, newest first: id, kind, status, params, summary, error, updated."""
        status = " AND status = 'complete'" if complete_only else ""
        return self.query("SELECT id, kind, status, params, summary, error, updated FROM runs WHERE model_id = ? "
                          f"AND dataset_id = ? AND kind LIKE 'npeff-%'{status} ORDER BY updated DESC",
                          [model_id, dataset_id])

    def model_record(self, model_id: str) -> dict | None:
        """The registered model row (name, source, ...), or None when the model was never registered."""
        rows = self.query("SELECT * FROM models WHERE id = ?", [model_id]).to_dict("records")
        return rows[0] if rows else None

    def dataset_record(self, dataset_id: str) -> dict | None:
        """The registered dataset row (name, source, label_names as JSON, ...), or None."""
        rows = self.query("SELECT * FROM datasets WHERE id = ?", [dataset_id]).to_dict("records")
        return rows[0] if rows else None

    # -- jobs (background processes; analysis/jobs.py runs them) ------------------------------------------
    _JOB_COLUMNS = ("id, kind, spec, status, step, total, message, stage, epoch(created), epoch(started), "
                    "epoch(current_timestamp::TIMESTAMP) - epoch(heartbeat), epoch(finished), "
                    "epoch(current_timestamp::TIMESTAMP) - epoch(stage_started), host, pid, cancel_requested, "
                    "error, result, epoch(current_timestamp::TIMESTAMP)")

    def create_job(self, job_id: str, kind: str, spec: dict, *, status: str = "queued", host: str | None = None,
                   pid: int | None = None) -> None:
        """A new job row: queued for a worker process, or running in the caller (status, host, pid given)."""
        if status not in JOB_ACTIVE:
            raise ValueError(f"a new job's status must be one of {JOB_ACTIVE}, got '{status}'")
        running = status == "running"
        with self.transaction() as con:
            con.execute("INSERT INTO jobs (id, kind, spec, status, step, total, message, host, pid, started, "
                        "heartbeat) VALUES (?, ?, ?, ?, 0, NULL, ?, ?, ?, "
                        f"{'current_timestamp' if running else 'NULL'}, current_timestamp)",
                        [job_id, kind, json.dumps(spec, sort_keys=True, default=str), status,
                         "starting" if running else "queued", host, pid])

    def job_row(self, job_id: str) -> tuple:
        """The job's row (columns _JOB_COLUMNS: times as epoch seconds, heartbeat and stage as ages)."""
        with self.connect() as con:
            row = con.execute(f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE id = ?", [job_id]).fetchone()
        if row is None:
            raise KeyError(f"no job '{job_id}' in workspace {self.root}")
        return row

    def job_rows(self, statuses: tuple[str, ...] = JOB_STATUSES) -> list[tuple]:
        """Rows of the jobs in these statuses, newest first."""
        with self.connect() as con:
            return con.execute(f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE list_contains(?, status) "
                               "ORDER BY created DESC", [list(statuses)]).fetchall()

    def claim_job(self, job_id: str, host: str, pid: int) -> bool:
        """A worker takes a queued job (running, with its host and pid); False when it is not queued any more."""
        with self.transaction() as con:
            row = con.execute("SELECT status, cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
            if row is None:
                raise KeyError(f"no job '{job_id}' in workspace {self.root}")
            if row[0] != "queued" or row[1]:
                return False
            con.execute("UPDATE jobs SET status = 'running', host = ?, pid = ?, started = current_timestamp, "
                        "heartbeat = current_timestamp, message = 'starting' WHERE id = ?", [host, pid, job_id])
        return True

    def set_job_pid(self, job_id: str, host: str, pid: int) -> None:
        """The process started for a queued job (until the process claims the job itself)."""
        with self.transaction() as con:
            con.execute("UPDATE jobs SET host = ?, pid = ? WHERE id = ? AND status = 'queued'", [host, pid, job_id])

    def job_progress(self, job_id: str, step: int, total: int | None, message: str, stage: str) -> bool:
        """Record progress and renew the heartbeat (a new stage restarts the stage clock); True when cancel
        was requested."""
        with self.transaction() as con:
            con.execute("UPDATE jobs SET stage_started = CASE WHEN stage IS DISTINCT FROM ? THEN current_timestamp "
                        "ELSE stage_started END, stage = ?, step = ?, total = ?, message = ?, "
                        "heartbeat = current_timestamp WHERE id = ?", [stage, stage, step, total, message, job_id])
            row = con.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
        return bool(row and row[0])

    def job_heartbeat(self, job_id: str) -> bool:
        """Renew the job's heartbeat; True when cancel was requested."""
        with self.transaction() as con:
            con.execute("UPDATE jobs SET heartbeat = current_timestamp WHERE id = ?", [job_id])
            row = con.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
        return bool(row and row[0])

    def finish_job(self, job_id: str, status: str, *, error: str | None = None, result: str | None = None,
                   only_if_active: bool = False) -> bool:
        """End a job: complete (result: the run id), failed (error) or cancelled. only_if_active: leave a job
        that has already ended as it is (e.g. one found dead after it finished). True when the row changed."""
        if status not in JOB_STATUSES[2:]:
            raise ValueError(f"a finished job's status must be one of {JOB_STATUSES[2:]}, got '{status}'")
        guard = " AND list_contains(?, status)" if only_if_active else ""
        with self.transaction() as con:
            changed = con.execute("UPDATE jobs SET status = ?, error = ?, result = coalesce(?, result), "
                                  f"finished = current_timestamp WHERE id = ?{guard} RETURNING id",
                                  [status, error, result, job_id] + ([list(JOB_ACTIVE)] if only_if_active else [])
                                  ).fetchall()
        return bool(changed)

    def request_job_cancel(self, job_id: str) -> None:
        """Ask a job to stop: its worker checks the flag at its next progress report or heartbeat."""
        with self.transaction() as con:
            con.execute("UPDATE jobs SET cancel_requested = true WHERE id = ? AND list_contains(?, status)",
                        [job_id, list(JOB_ACTIVE)])

    def requeue_job(self, job_id: str) -> None:
        """A failed or cancelled job queued again with the same spec (its runs resume where they stopped)."""
        with self.transaction() as con:
            con.execute("UPDATE jobs SET status = 'queued', step = 0, total = NULL, message = 'queued', stage = NULL, "
                        "stage_started = NULL, error = NULL, cancel_requested = false, started = NULL, "
                        "finished = NULL, pid = NULL, heartbeat = current_timestamp, created = current_timestamp "
                        "WHERE id = ?", [job_id])

    def append_job_points(self, job_id: str, series: str, points: list[tuple[int, float]]) -> None:
        """Record (step, value) points of a job's series in one write; a step recorded again (a resumed fit
        repeating iterations) keeps its newest value."""
        if not points:
            return
        frame = pd.DataFrame({"job_id": job_id, "series": series, "step": [int(s) for s, _ in points],
                              "value": [float(v) for _, v in points]}).drop_duplicates("step", keep="last")
        with self.transaction() as con:
            con.register("points", frame)
            con.execute("INSERT OR REPLACE INTO job_points SELECT job_id, series, step, value FROM points")
            con.unregister("points")

    def job_points(self, job_id: str, series: str) -> tuple[np.ndarray, np.ndarray]:
        """(steps [p] int64, values [p] float64) of a job's series, by step ([] when none were recorded)."""
        with self.connect() as con:
            rows = con.execute("SELECT step, value FROM job_points WHERE job_id = ? AND series = ? ORDER BY step",
                               [job_id, series]).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.float64)

    # -- component notes (analysis/notes.py validates them) ------------------------------------------------
    def set_component_note(self, run_id: str, component: int, *, name: str, tags: list[str], note: str,
                           updated: datetime) -> None:
        """Store the note of one component of a decomposition run (one row per component, replacing the
        previous one); a note with no name, tags or text deletes the row."""
        with self.transaction() as con:
            if not (name or tags or note):
                con.execute("DELETE FROM component_notes WHERE run_id = ? AND component = ?", [run_id, component])
                return
            con.execute("INSERT OR REPLACE INTO component_notes (run_id, component, name, tags, note, updated) "
                        "VALUES (?, ?, ?, ?, ?, ?)", [run_id, component, name, json.dumps(tags), note, updated])

    def component_notes(self, run_id: str) -> list[tuple[int, str, list[str], str, datetime]]:
        """(component, name, tags, note, updated as naive UTC) of a decomposition run's notes, by component."""
        with self.connect() as con:
            rows = con.execute("SELECT component, name, tags, note, updated FROM component_notes WHERE run_id = ? "
                               "ORDER BY component", [run_id]).fetchall()
        return [(int(c), name, json.loads(tags), note, updated) for c, name, tags, note, updated in rows]

    # -- chunks (resumable streaming) ---------------------------------------------------------------
    def record_chunk(self, run_id: str, chunk: int, n_rows: int, *, start: int | None = None) -> None:
        """Note that chunk `chunk` (rows [start, start + n_rows) of the input) of a run is durable (its files
        were written and fsynced first)."""
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO run_chunks (run_id, chunk, n_rows, start) VALUES (?, ?, ?, ?)",
                        [run_id, chunk, n_rows, start])

    def finished_chunks(self, run_id: str) -> dict[int, int]:
        """{chunk: rows} of the durable chunks."""
        return {c: n for c, (_, n) in self.chunk_ranges(run_id).items()}

    def chunk_ranges(self, run_id: str) -> dict[int, tuple[int | None, int]]:
        """{chunk: (first input row or None when not recorded, rows)} of the durable chunks."""
        with self.connect() as con:
            rows = con.execute("SELECT chunk, start, n_rows FROM run_chunks WHERE run_id = ?", [run_id]).fetchall()
        return {int(c): (None if a is None else int(a), int(n)) for c, a, n in rows}

    def forget_chunks(self, run_id: str, chunks: list[int]) -> None:
        """Drop chunk records (their files are the caller's to delete)."""
        with self.transaction() as con:
            con.execute("DELETE FROM run_chunks WHERE run_id = ? AND list_contains(?, chunk)", [run_id, chunks])

    # -- arrays and tables -----------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        path = self.root / "arrays" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def array_path(self, run_id: str, name: str) -> Path:
        return self.root / "arrays" / run_id / f"{name}.npy"

    def table_path(self, run_id: str, name: str) -> Path:
        return self.root / "arrays" / run_id / f"{name}.parquet"

    def save_array(self, run_id: str, name: str, array: np.ndarray) -> Path:
        """Write atomically and durably: temp file, fsync, rename (the temp file is removed on any error)."""
        return _write_durably(self.array_path(run_id, name), lambda f: np.save(f, np.ascontiguousarray(array)))

    def save_array_parts(self, run_id: str, name: str, parts: list[np.ndarray]) -> Path:
        """The row-wise concatenation of `parts` (same dtype and trailing shape) as one .npy, written like
        save_array but one part in memory at a time (parts may be memory maps)."""
        return _write_durably(self.array_path(run_id, name), lambda f: _write_npy_parts(f, parts))

    def save_table(self, run_id: str, name: str, frame: pd.DataFrame) -> Path:
        """A table as Parquet, written like save_array."""
        return _write_durably(self.table_path(run_id, name), lambda f: frame.to_parquet(f, index=False))

    def load_array(self, run_id: str, name: str, mmap: bool = True) -> np.ndarray:
        path = self.array_path(run_id, name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: array '{name}' of run {run_id} is missing; recompute the run")
        try:
            return np.load(path, mmap_mode="r" if mmap else None)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"{path}: array '{name}' of run {run_id} is truncated or unreadable ({e}); "
                             "recompute the run") from e

    def load_table(self, run_id: str, name: str) -> pd.DataFrame:
        path = self.table_path(run_id, name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: table '{name}' of run {run_id} is missing; recompute the run")
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: table '{name}' of run {run_id} is truncated or unreadable ({e}); "
                             "recompute the run") from e

    def save_arrays(self, run_id: str, arrays: dict[str, Any]) -> None:
        for name, array in arrays.items():
            self.save_array(run_id, name, np.asarray(array))


@contextmanager
def repeating(interval_s: float, beat: Callable[[], None], name: str) -> Iterator[None]:
    """Call beat() every interval_s seconds in a daemon thread while the block runs; a beat that finds the
    workspace locked by another process (RuntimeError) is skipped, the next one tries again."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                beat()
            except RuntimeError:
                pass

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _write_npy_parts(f, parts: list[np.ndarray]) -> None:
    """An .npy file holding np.concatenate(parts), written part by part."""
    first = parts[0]
    if any(p.dtype != first.dtype or p.shape[1:] != first.shape[1:] for p in parts):
        raise ValueError(f"parts must share dtype and trailing shape, got "
                         f"{sorted({(str(p.dtype), p.shape[1:]) for p in parts})}")
    shape = (sum(len(p) for p in parts), *first.shape[1:])
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(first.dtype),
                                             "fortran_order": False, "shape": shape})
    for part in parts:
        f.write(np.ascontiguousarray(part).tobytes())


def _write_durably(path: Path, write: Callable[[Any], None]) -> Path:
    """write(file) into a temp file beside `path`, fsync, rename over `path`; the temp file never stays behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:6]}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
