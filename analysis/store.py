"""The workspace: one DuckDB database (metadata, runs, small tables) plus per-run .npy side files.

Big arrays live in memory-mappable .npy files next to the database (ECOSYSTEM.md: 10-100× faster
than DuckDB for them); a run becomes `complete` in one transaction only after its files are
durable. One connection per process, serialized by a lock and released after a second idle, so
the dashboard and the CLI can share one workspace file (DuckDB lets one process open it at a time;
the other retries on its lock).
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import duckdb
import numpy as np
import pandas as pd

DEFAULT_WORKSPACE = Path(os.environ.get("NPEFF_WORKSPACE", Path(__file__).resolve().parent.parent / "workspace"))
RUN_STATUSES = ("pending", "running", "complete", "failed")

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
]


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


def run_key(kind: str, params: dict) -> str:
    """Content key of a computation: same kind and parameters -> same key -> computed once."""
    blob = json.dumps({"kind": kind, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


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
        self.migrate()

    # -- connections -----------------------------------------------------------------------
    def _open(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                return duckdb.connect(str(self.db_path))
            except duckdb.IOException as e:
                if "lock" not in str(e).lower() or time.monotonic() > deadline:
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
    def _run_from_row(self, row: tuple) -> Run:
        id_, kind, key, model_id, dataset_id, params, status, error, summary = row
        return Run(id=id_, kind=kind, key=key, model_id=model_id, dataset_id=dataset_id,
                   params=json.loads(params), status=status, error=error, summary=json.loads(summary or "{}"))

    _RUN_COLUMNS = "id, kind, key, model_id, dataset_id, params, status, error, summary"

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
                  dataset_id: str | None = None) -> Run:
        """The run for (kind, params): a complete one is returned as is; otherwise it is (re)marked running."""
        key = run_key(kind, params)
        with self.transaction() as con:
            row = con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE key = ?", [key]).fetchone()
            if row is None:
                con.execute("INSERT INTO runs (id, kind, key, model_id, dataset_id, params, status) "
                            "VALUES (?, ?, ?, ?, ?, ?, 'running')",
                            [uuid.uuid4().hex[:12], kind, key, model_id, dataset_id,
                             json.dumps(params, sort_keys=True, default=str)])
            elif row[6] != "complete":
                con.execute("UPDATE runs SET status = 'running', error = NULL, updated = current_timestamp "
                            "WHERE key = ?", [key])
            row = con.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE key = ?", [key]).fetchone()
        return self._run_from_row(row)

    def fail_run(self, run_id: str, error: str) -> None:
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'failed', error = ?, updated = current_timestamp "
                        "WHERE id = ? AND status <> 'complete'", [error, run_id])

    def complete_run(self, run_id: str, summary: dict, expected_arrays: list[str] = ()) -> None:
        """Mark complete in one transaction, after checking the run's array files are on disk."""
        missing = [n for n in expected_arrays if not self.array_path(run_id, n).exists()]
        if missing:
            raise RuntimeError(f"run {run_id}: arrays {missing} are missing; the run stays incomplete")
        with self.transaction() as con:
            con.execute("UPDATE runs SET status = 'complete', summary = ?, error = NULL, "
                        "updated = current_timestamp WHERE id = ?", [json.dumps(summary, default=str), run_id])

    def runs(self, kind: str | None = None, status: str | None = None) -> pd.DataFrame:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if kind:
            sql, args = sql + " AND kind = ?", args + [kind]
        if status:
            sql, args = sql + " AND status = ?", args + [status]
        return self.query(sql + " ORDER BY created", args)

    # -- chunks (resumable streaming) ---------------------------------------------------------------
    def record_chunk(self, run_id: str, chunk: int, n_rows: int) -> None:
        """Note that chunk `chunk` of a run is durable (its files were written and fsynced first)."""
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO run_chunks VALUES (?, ?, ?)", [run_id, chunk, n_rows])

    def finished_chunks(self, run_id: str) -> dict[int, int]:
        with self.connect() as con:
            rows = con.execute("SELECT chunk, n_rows FROM run_chunks WHERE run_id = ?", [run_id]).fetchall()
        return {int(c): int(n) for c, n in rows}

    # -- arrays ----------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        path = self.root / "arrays" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def array_path(self, run_id: str, name: str) -> Path:
        return self.root / "arrays" / run_id / f"{name}.npy"

    def save_array(self, run_id: str, name: str, array: np.ndarray) -> Path:
        """Write atomically and durably: temp file, fsync, rename."""
        path = self.array_path(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{uuid.uuid4().hex[:6]}")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def load_array(self, run_id: str, name: str, mmap: bool = True) -> np.ndarray:
        path = self.array_path(run_id, name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: array '{name}' of run {run_id} is missing; recompute the run")
        return np.load(path, mmap_mode="r" if mmap else None)

    def save_arrays(self, run_id: str, arrays: dict[str, Any]) -> None:
        for name, array in arrays.items():
            self.save_array(run_id, name, np.asarray(array))
