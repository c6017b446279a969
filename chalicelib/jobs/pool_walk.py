"""Batch jobs over the priced pools take them in turns once there are more than a run may handle.

The risk scorer, the pricing aggregator and the data cleaner each work on the pools priced in the last day
(``pools.priced_page``), at most a cap a run. Reading the same first ``cap`` pools of the table every run
would leave the rest without a risk score (never a decision's target), without roll-ups and with their raw
points kept; instead each job keeps, in ``job-state`` under its own key, the pool it stopped after, and the
next run goes on from there — round to the table's start with the room left — so every pool is worked on
within ⌈pools / cap⌉ runs. The position also counts the runs since the walk last went round (``runs``) and how
many its last whole round took (``lap_runs``): the runs between two turns of one pool, which the risk scorer
needs to count a pool's exposure for every run since its last turn, not for one. Runs, not seconds: a pause of
the schedule credits no exposure, as under the cap.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from chalicelib.repositories import job_state
from chalicelib.repositories import pools as pool_repo
from chalicelib.repositories.pools import PoolPrice


class Turn(NamedTuple):
    """One run's share of the walk."""

    pools: list[PoolPrice]  # by id
    capped: bool  # the run did not go round every priced pool
    lap_runs: int | None  # runs the walk's last whole round took (None: under the cap, or none counted yet)


def next_pools(job_key: str, now: datetime, cap: int) -> Turn:
    """This run's pools, whether the cap binds, and how long a round of the walk takes (see :class:`Turn`)."""
    saved = job_state.position(job_key)
    after, runs, lap_runs = saved.get("after"), saved.get("runs"), saved.get("lap_runs")
    page = pool_repo.priced_page(now, cap, after=after)
    pools, resume = page.pools, page.resume_after
    went_round = after is not None and resume is None  # this run reached the table's end from mid-way
    at_end = went_round and len(pools) >= cap  # ... exactly: the next run starts from the table's start
    if went_round and not at_end:  # go on from the table's start with the room left
        head = pool_repo.priced_page(now, cap - len(pools))
        have = {p.pool_id for p in pools}
        pools = sorted(pools + [p for p in head.pools if p.pool_id not in have], key=lambda p: p.pool_id)
        resume = head.resume_after  # None: this run went round the whole table
    if resume is None and not at_end:  # under the cap: no position, none to keep, and a run writes nothing
        if saved:
            job_state.set_position(job_key, {}, now)
        return Turn(pools, False, None)
    if went_round:  # a round is counted from one going round to the next (the first one only starts the count)
        lap_runs = None if runs is None else int(runs) + 1
        runs = 0
    elif runs is not None:
        runs = int(runs) + 1
    fields = {key: value for key, value in (("after", resume), ("runs", runs), ("lap_runs", lap_runs))
              if value is not None}
    job_state.set_position(job_key, fields, now)
    return Turn(pools, True, None if lap_runs is None else int(lap_runs))
