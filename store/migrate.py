"""Bringing a results database to SCHEMA_VERSION when a Store opens it.

A new (empty) file gets the schema. A store written by an older auditor is migrated one
version step at a time, all steps in one transaction: it opens with its data kept, or it
is left as it was. A store of an unknown or newer version, or a database that is not a
results store, is refused with one line.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ground.errors import AuditorError, first_line
from store.schema import SCHEMA, SCHEMA_VERSION, statements


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """Version 1 added runs.converted and models.state with ALTER TABLE on open (stores from
    before those columns lack them) and created coverage and dataset_points on first use:
    the columns are added where missing (and runs.rt_safety, new in 2); the tables come with
    the schema's CREATEs."""
    for table, column in (("runs", "converted"), ("models", "state"), ("runs", "rt_safety")):
        if column not in _columns(db, table):
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")


# version -> the step that brings a store of that version to the next one
STEPS = {1: _v1_to_v2}


def _version(db: sqlite3.Connection, path: Path) -> int | None:
    """The stored schema version; None for an empty database."""
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return None
    row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() if "meta" in tables else None
    if row is None:
        raise AuditorError(f"{path} is a SQLite database but not an auditor results store (no schema version)")
    try:
        return int(row[0])
    except ValueError:
        raise AuditorError(f"{path} has schema version {row[0]!r}; this auditor reads {SCHEMA_VERSION}") from None


def open_schema(db: sqlite3.Connection, path: Path) -> int | None:
    """Create, migrate or accept the schema of `db` (autocommit connection); the version it
    was found at (None: created), once brought to SCHEMA_VERSION. Raises AuditorError for a
    store this auditor cannot read."""
    if _version(db, path) == SCHEMA_VERSION:
        return SCHEMA_VERSION
    db.execute("BEGIN IMMEDIATE")  # another process may be creating or migrating it too
    found = None
    try:
        found = _version(db, path)
        if found is not None and found != SCHEMA_VERSION and found not in STEPS:
            newer = " (written by a newer auditor)" if found > SCHEMA_VERSION else ""
            raise AuditorError(f"{path} has schema version {found}; this auditor reads {SCHEMA_VERSION}{newer}")
        version = found
        while version is not None and version != SCHEMA_VERSION:
            STEPS[version](db)
            version += 1
        for statement in statements(SCHEMA):
            db.execute(statement)
        db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        db.execute("COMMIT")
    except BaseException as e:
        db.execute("ROLLBACK")
        if isinstance(e, sqlite3.DatabaseError) and found is not None:
            raise AuditorError(f"{path}: migrating the store from schema version {found} failed "
                               f"({first_line(e)}); it is unchanged") from None
        raise
    return found
