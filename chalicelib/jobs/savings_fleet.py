"""Every hour at :45: the fleet's savings rows, summed from the clients' stored day rows of the last roll-up.

The roll-up fans out (chalicelib/jobs/savings_rollup.py): no invocation holds every client's days any more, so
the fleet is summed from what the workers stored, once they are done. The run taken is the last one dispatched
(``savings-rollup`` at :00, ``savings-close`` at 00:15: the 00:45 run closes yesterday and, on the 1st, last
month); its fleet rows are computed as of its scheduled time, as the clients' were.

A fleet period is closed only once every client's rows for it are: when a client of the run is not noted done
(its worker failed, its message went stale or is still waiting), nothing is written and the fleet keeps its
previous rows until a run completes (``incomplete``), as before the fan-out when a client failed. Writes are
deterministic and only of what changed: a re-run writes nothing.

Reads: one Query of the run, one of the clients done, one of each client's day rows in the window.
"""

from __future__ import annotations

from datetime import datetime

from components.calculations import day_key

from chalicelib.jobs.savings_rollup import ClientRollup, rollup_fleet, window
from chalicelib.jobs.fanout import publish_counts
from chalicelib.observability import logged_job, logger
from chalicelib.repositories import savings


@logged_job("savings-fleet")
def run(now: datetime) -> dict:
    """Sum the last run's client day rows into the fleet's rows, if every client of the run is done."""
    latest = savings.latest_run(now)
    if latest is None:
        logger.info("savings fleet: no roll-up dispatched yet")
        return {"run": None, "writes": 0}
    scheduled, dispatched = latest
    done = savings.done_clients(savings.run_period(scheduled))
    result = {"run": savings.run_period(scheduled), "clients": len(done),
              "missing": max(0, dispatched - len(done)), "writes": 0}
    if result["missing"]:
        logger.warning("savings fleet kept: clients of the run not rolled up", extra=result)
    else:
        start, end = window(scheduled)
        lo, hi = day_key(start), day_key(end)
        results = [ClientRollup(client_id, savings.client_days(client_id, lo, hi), 0, 0) for client_id in done]
        result["writes"] = rollup_fleet(results, scheduled)
        logger.info("savings fleet", extra=result)
    publish_counts("SavingsFleet", {name: result[name] for name in ("clients", "missing", "writes")})
    return result
