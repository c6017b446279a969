"""Daily: the growth/fleet snapshot (clients, agents, active instances, total savings) for the admin view.

Walks the client listing index and queries each client's agents and instances by key (no scans). The row
is keyed by date, so a re-run the same day overwrites it.
"""

from __future__ import annotations

from datetime import datetime

from chalicelib.observability import logged_job, logger
from chalicelib.repositories import savings
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.clients import CLIENT_LISTING, ClientTable
from chalicelib.tables.instances import InstanceTable

_GONE = ("deleted", "terminated")


def counts() -> dict[str, int]:
    """Clients total/active, agents total (not deleted)/online, instances active, across the fleet."""
    found = dict.fromkeys(("clients_total", "clients_active", "agents_total", "agents_online",
                           "instances_active"), 0)
    for client in ClientTable.by_created.query(CLIENT_LISTING, attributes_to_get=["client_id", "status"]):
        found["clients_total"] += 1
        found["clients_active"] += client.status == "active"
        for agent in AgentTable.query(client.client_id, attributes_to_get=["status", "deleted_at"]):
            if agent.deleted_at is None and agent.status not in _GONE:
                found["agents_total"] += 1
                found["agents_online"] += agent.status == "online"
        found["instances_active"] += sum(1 for _ in InstanceTable.by_client.query(
            client.client_id, filter_condition=InstanceTable.is_active == True))  # noqa: E712
    return found


@logged_job("growth-snapshot")
def run(now: datetime) -> dict[str, int]:
    """Take today's snapshot (UTC date of ``now``)."""
    found = counts()
    total = savings.fleet_total_savings(now)
    savings.put_growth(now.date(), found, total, now)
    logger.info("growth snapshot", extra={**found, "total_savings": str(total)})
    return found
