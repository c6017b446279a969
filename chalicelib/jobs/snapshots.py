"""Every 15 minutes: the fleet's counts (clients, agents, instances, switches, interruptions, pools) for the admin
stats, and today's growth row (clients, agents, active instances, total savings).

Counting walks the client listing index and queries each client's partitions (``repositories.fleet.fleet_counts``:
no scans but the pools table's COUNT), a few queries per client: too much for a request once there are hundreds
of clients (API Gateway gives up at 29 s), so ``GET /api/admin/stats`` reads what the last run stored
(``fleet.latest_counts``; ``counted_at`` says when). The growth row is keyed by date: each run overwrites
today's, so a day's row is what its last run counted.
"""

from __future__ import annotations

from datetime import datetime

from chalicelib.observability import logged_job, logger
from chalicelib.repositories import fleet, savings


@logged_job("growth-snapshot")
def run(now: datetime) -> dict[str, int]:
    """Count the fleet and write today's growth row (UTC date of ``now``)."""
    found = fleet.count_and_store(now)
    total = savings.fleet_total_savings(now)
    savings.put_growth(now.date(), found, total, now)
    logger.info("growth snapshot", extra={**found, "total_savings": str(total)})
    return found
