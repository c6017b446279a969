"""Where a batch job that works in slices resumes, and what a counting job last found (``job-state`` table)."""

from __future__ import annotations

from datetime import datetime

from chalicelib.tables.jobs import JobStateTable


def _row(job_key: str) -> JobStateTable | None:
    try:
        return JobStateTable.get(job_key, consistent_read=True)
    except JobStateTable.DoesNotExist:
        return None


def position(job_key: str) -> dict:
    """The job's saved resume position, a dict of the job's own fields (empty: start from the beginning)."""
    row = _row(job_key)
    return dict(row.cursor or {}) if row is not None else {}


def set_position(job_key: str, fields: dict, now: datetime) -> None:
    """Save the job's resume position (``{}``: the next run starts from the beginning)."""
    JobStateTable(job_key, cursor=fields, updated_at=now).save()


def put_result(job_key: str, fields: dict, now: datetime) -> None:
    """Store what the job's run found, for readers that must not redo its work (e.g. the admin stats)."""
    JobStateTable(job_key, cursor=fields, at=now, updated_at=now).save()


def result(job_key: str) -> tuple[dict, datetime] | None:
    """The job's last stored result and its time, or None before its first run."""
    row = _row(job_key)
    return (dict(row.cursor or {}), row.at or row.updated_at) if row is not None else None
