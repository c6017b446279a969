"""Where a batch job that works in slices resumes (``job-state`` table)."""

from __future__ import annotations

from datetime import datetime

from chalicelib.tables.jobs import JobStateTable


def cursor(job_key: str) -> str | None:
    """The job's saved resume token (None: start from the beginning)."""
    try:
        row = JobStateTable.get(job_key, consistent_read=True)
    except JobStateTable.DoesNotExist:
        return None
    return (row.cursor or {}).get("next_token")


def set_cursor(job_key: str, token: str | None, now: datetime) -> None:
    JobStateTable(job_key, cursor={"next_token": token}, updated_at=now).save()
