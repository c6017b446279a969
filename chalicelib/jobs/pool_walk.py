"""Batch jobs over the priced pools take them in turns once there are more than a run may handle.

The risk scorer, the pricing aggregator and the data cleaner each work on the pools priced in the last day
(``pools.priced_page``), at most a cap a run. Reading the same first ``cap`` pools of the table every run
would leave the rest without a risk score (never a decision's target), without roll-ups and with their raw
points kept; instead each job keeps, in ``job-state`` under its own key, the pool it stopped after, and the
next run goes on from there — round to the table's start with the room left — so every pool is worked on
within ⌈pools / cap⌉ runs.
"""

from __future__ import annotations

from datetime import datetime

from chalicelib.repositories import job_state
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories.pools import PoolPrice


def next_pools(job_key: str, now: datetime, cap: int) -> tuple[list[PoolPrice], bool]:
    """This run's pools (by id) and whether the cap binds (the run did not go round every priced pool)."""
    after = job_state.position(job_key).get("after")
    page = pool_repo.priced_page(now, cap, after=after)
    pools, resume = page.pools, page.resume_after
    if after and resume is None and len(pools) < cap:  # the walk reached the table's end: go on from its start
        head = pool_repo.priced_page(now, cap - len(pools))
        have = {p.pool_id for p in pools}
        pools = sorted(pools + [p for p in head.pools if p.pool_id not in have], key=lambda p: p.pool_id)
        resume = head.resume_after  # None: this run went round the whole table
    if resume != after:  # under the cap (no position, none to keep) a run writes nothing
        job_state.set_position(job_key, {"after": resume} if resume else {}, now)
    return pools, resume is not None
