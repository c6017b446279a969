"""Bookkeeping of the batch jobs that work through the data in slices (pricing aggregator, data cleaner, risk
scorer: chalicelib/jobs/pool_walk.py), and the growth snapshot's last fleet counts."""

from __future__ import annotations

from pynamodb.attributes import JSONAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, table_name


class JobStateTable(Model):
    """One row per job and subject: ``rollup#<pool_id>`` (``at`` = the end of the last hour the pricing
    aggregator rolled up for that pool), ``cleaner#clients`` (``cursor`` = where the data cleaner's
    next run resumes its walk), ``<job>#pools`` (the turns over the priced pools past a job's cap) or ``fleet-counts`` (``cursor`` = the growth snapshot's last counts, ``at`` = when)."""

    class Meta(BaseMeta):
        table_name = table_name("job-state")

    job_key = UnicodeAttribute(hash_key=True)
    at = UTCDateTimeAttribute(null=True)
    cursor = JSONAttribute(null=True)
    updated_at = UTCDateTimeAttribute()
