"""Whether a sparse index can be read yet, and the backfill that makes it so on a stage upgraded in place.

A stage deployed before an index existed has rows without its key: DynamoDB builds the index from what rows carry,
so those rows are missing from it until the cleanup job's backfill has given every row that belongs its key. Until
then ``ready`` is False and readers use the filtered read they used before; once the backfill has walked the whole
table it records the index as done (``job-state`` row ``sparse-index#<name>``) and every reader switches over. Rows
written meanwhile get their key from the writers themselves, so the walk never has to come back.
"""

from __future__ import annotations

from datetime import datetime

from pynamodb.exceptions import UpdateError

from chalicelib.repositories import job_state
from chalicelib.repositories.dynamo import condition_failed
from chalicelib.tables.base import SparseIndex

DONE = "done"
# Scan requests one cleanup run makes per index (each reads at most DynamoDB's 1 MB page): ≈ 10,000 rows a run.
READS_PER_RUN = 10
_ready: set[str] = set()  # indexes this process has seen done (an index never stops being ready)


def _job_key(index: SparseIndex) -> str:
    return f"sparse-index#{index.name}"


def ready(index: SparseIndex) -> bool:
    """Whether every row that belongs to ``index`` is in it (one consistent read until it is, none after)."""
    if index.name in _ready:
        return True
    if job_state.position(_job_key(index)).get(DONE):
        _ready.add(index.name)
        return True
    return False


def mark_ready(index: SparseIndex, now: datetime) -> None:
    """Record ``index`` as complete: its table was created with it (nothing to backfill) or the walk has ended."""
    job_state.set_position(_job_key(index), {DONE: True}, now)
    _ready.add(index.name)


def forget_ready() -> None:
    """Drop what this process remembers (tests that put a stage back before its backfill)."""
    _ready.clear()


def backfill(index: SparseIndex, now: datetime, reads: int = READS_PER_RUN, page_size: int | None = None) -> int:
    """Give the rows of ``index``'s table that belong to it but lack its key their key, resuming where the last run
    stopped, at most ``reads`` Scan requests (of ``page_size`` rows, default DynamoDB's 1 MB); returns how many rows were given a key. Each write is conditional on
    the row still belonging and still lacking the key: a row a writer closed or keyed meanwhile is left as it is."""
    if ready(index):
        return 0
    model, key = index.model, index.key
    missing = index.belongs() & key.does_not_exist()
    start = job_state.position(_job_key(index)).get("start")
    keyed = 0
    for _ in range(reads):
        result = model.scan(filter_condition=missing, last_evaluated_key=start, page_size=page_size)
        page = next(result.page_iter, None) or {}
        for raw in page.get("Items", []):
            row = model.from_raw_data(raw)
            try:
                row.update(actions=[key.set(index.value(row))], condition=missing)
                keyed += 1
            except UpdateError as exc:
                if not condition_failed(exc):
                    raise
        start = result.page_iter.last_evaluated_key
        if not start:
            mark_ready(index, now)
            return keyed
    job_state.set_position(_job_key(index), {"start": start}, now)
    return keyed
