"""Where a batch job that works in slices resumes (``job-state`` table)."""

from __future__ import annotations

from datetime import datetime

from chalicelib.tables.jobs import JobStateTable


def position(job_key: str) -> dict:
    """The job's saved resume position, a dict of the job's own fields (empty: start from the beginning)."""
    try:
        row = JobStateTable.get(job_key, consistent_read=True)
    except JobStateTable.DoesNotExist:
        return {}
    return dict(row.cursor or {})


def set_position(job_key: str, fields: dict, now: datetime) -> None:
    """Save the job's resume position (``{}``: the next run starts from the beginning)."""
    JobStateTable(job_key, cursor=fields, updated_at=now).save()
