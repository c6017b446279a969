"""Fleet-wide reads and the hard delete of a client, for the admin API only (never a client's request path).

Index use, per the no-scan rule:
- per-client counts query the client's own partitions (agents, switches, interruptions: table key; active
  instances: ``agents.active_instance_count``), clients come from the ``clients-by-created`` listing index;
- the fleet-wide agent and instance listings have no index that serves "every row of every client", so they
  are **bounded, paginated scans** (``Limit`` = the page size, ``next_token`` = the scan's LastEvaluatedKey):
  one admin page reads at most one page of rows;
- ``pools_tracked`` is a COUNT scan of the pools table (small: region x type x zone), admin stats only;
- the fleet totals walk every client, so the growth snapshot counts them every 15 minutes and the admin stats
  read the stored result (``latest_counts``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pynamodb.models import Model

from components.agent_identity import AgentStatus

from chalicelib.repositories import agents as agent_repo
from chalicelib.repositories import clients, job_state, savings
from chalicelib.repositories.paging import Page, decode_scan_token, read_page
from chalicelib.tables import (
    AgentTable,
    ClientLookupTable,
    ClientTable,
    CommandTable,
    DecisionTable,
    InstanceTable,
    InterruptionTable,
    NotificationTable,
    PoolTable,
    PricingReportTable,
    ReplicaTable,
    SwitchTable,
)
from chalicelib.tables.clients import CLIENT_LISTING, name_lookup_key

FLEET_COUNTS = "fleet-counts"  # job-state key of the growth snapshot's last counts
ONLINE = (AgentStatus.ONLINE.value, AgentStatus.DEGRADED.value, AgentStatus.SWITCHING.value)


@dataclass(frozen=True)
class ClientCounts:
    """What the admin client list shows next to each client."""

    agents_total: int
    agents_online: int
    instances_active: int


def client_counts(client_id: str) -> ClientCounts:
    """Agents (not deleted/terminated), of them online, and active instances of one client (two queries)."""
    total = online = 0
    for row in AgentTable.query(client_id, attributes_to_get=["agent_id", "status"]):
        if row.status in agent_repo.GONE_STATUSES:
            continue
        total += 1
        online += row.status in ONLINE
    return ClientCounts(total, online, agent_repo.active_instance_count(client_id))


def client_ids():
    """Every client id, in creation order (the listing index, paginated by pynamodb)."""
    for row in ClientTable.by_created.query(CLIENT_LISTING, attributes_to_get=["client_id", "status"]):
        yield row.client_id, row.status


def _since_key(since: datetime) -> str:
    return since.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fleet_counts(now: datetime) -> dict[str, int]:
    """Totals over every client (one pass over the clients index, a few queries per client)."""
    totals = {"clients_total": 0, "clients_active": 0, "agents_total": 0, "agents_online": 0,
              "instances_active": 0, "switches_total": 0, "switches_24h": 0, "interruptions_24h": 0}
    day_ago = now - timedelta(hours=24)
    for client_id, status in client_ids():
        counts = client_counts(client_id)
        totals["clients_total"] += 1
        totals["clients_active"] += status == "active"
        totals["agents_total"] += counts.agents_total
        totals["agents_online"] += counts.agents_online
        totals["instances_active"] += counts.instances_active
        totals["switches_total"] += SwitchTable.count(client_id)
        totals["switches_24h"] += SwitchTable.count(client_id, SwitchTable.switch_key >= _since_key(day_ago))
        totals["interruptions_24h"] += InterruptionTable.count(
            client_id, InterruptionTable.interruption_id >= f"int-{day_ago.strftime('%Y%m%dT%H%M%S%f')}")
    totals["pools_tracked"] = PoolTable.count()
    return totals


def count_and_store(now: datetime) -> dict[str, int]:
    """Count the fleet (``fleet_counts``) and store it for the admin stats (the growth snapshot's run)."""
    found = fleet_counts(now)
    job_state.put_result(FLEET_COUNTS, found, now)
    return found


def latest_counts(now: datetime) -> tuple[dict[str, int], datetime]:
    """The last stored counts and when they were taken: a request reads them, never walks every client. On a stage
    the snapshot has not counted yet, counted (and stored) now."""
    stored = job_state.result(FLEET_COUNTS)
    if stored is not None:
        return stored
    return count_and_store(now), now


def agents_page(limit: int, next_token: str | None, status: str | None = None) -> Page:
    """Every client's agents, one bounded scan page (admin only; no index lists all agents).
    With a ``status`` filter a page may hold fewer than ``limit`` rows and still have a next_token."""
    key = ("client_id", "agent_id")
    start = decode_scan_token(next_token, key_attrs=key)
    page = read_page(AgentTable, lambda size, at: AgentTable.scan(
        page_size=size, last_evaluated_key=at, filter_condition=(AgentTable.status == status) if status else None),
        limit=limit, start=start, key_attrs=key)
    rows = [agent_repo._record(row) for row in page.items]  # noqa: SLF001 - the one row→record mapping
    return Page(rows, page.next_token)


def instances_page(limit: int, next_token: str | None, *, status: str | None = None, mode: str | None = None,
                   region: str | None = None) -> Page:
    """Every client's instances, one bounded scan page (admin only; no index lists all instances).
    ``status``: active | terminated | all (None = all)."""
    start = decode_scan_token(next_token, key_attrs=("instance_id",))
    condition = None
    for part in ((InstanceTable.is_active == (status == "active")) if status in ("active", "terminated") else None,
                 (InstanceTable.mode == mode) if mode else None,
                 (InstanceTable.region == region) if region else None):
        if part is not None:
            condition = part if condition is None else condition & part
    return read_page(InstanceTable, lambda size, at: InstanceTable.scan(
        page_size=size, last_evaluated_key=at, filter_condition=condition),
        limit=limit, start=start, key_attrs=("instance_id",))


# --- hard delete of a client ---

def live_standbys(client_id: str) -> list[ReplicaTable]:
    """Every replica row of the client's agents that may still hold an instance (failed and expired standbys
    included: the EC2 adapter skips what is already gone; a promoted one is an instance row now)."""
    found = []
    for agent in AgentTable.query(client_id, attributes_to_get=["agent_id"]):
        found += [r for r in ReplicaTable.query(agent.agent_id)
                  if r.instance_id and r.status not in ("terminated", "promoted")]
    return found


def _delete_all(rows: Iterable[Model]) -> int:
    count = 0
    for row in rows:
        row.delete()
        count += 1
    return count


def delete_client_rows(client_id: str) -> dict[str, int]:
    """Delete every row of the client across the tenant tables but the client's own (``delete_client_row``, last, so
    a retry after a failure finds the client and finishes). Shared market data (pools, prices, risk,
    observations), the fleet's savings totals and the audit log (TTL-expired) are kept; rate-limit and idempotency
    items expire."""
    deleted = {"agents": 0, "instances": 0, "replicas": 0, "commands": 0, "decisions": 0, "pricing_reports": 0,
               "switches": 0, "interruptions": 0, "notifications": 0, "savings": 0}
    agent_ids = [row.agent_id for row in AgentTable.query(client_id, attributes_to_get=["agent_id"])]
    for agent_id in agent_ids:
        deleted["replicas"] += _delete_all(ReplicaTable.query(agent_id))
        deleted["commands"] += _delete_all(CommandTable.query(agent_id))
        deleted["decisions"] += _delete_all(DecisionTable.query(agent_id))
        deleted["pricing_reports"] += _delete_all(PricingReportTable.query(agent_id))
    instance_ids = [r.instance_id for r in InstanceTable.by_client.query(client_id)]
    # before the instance rows: a retry after a failure still finds the instances whose day rows to delete
    deleted["savings"] = savings.delete_client(client_id, agent_ids, instance_ids)
    deleted["instances"] = _delete_all(InstanceTable(instance_id) for instance_id in instance_ids)
    deleted["switches"] = _delete_all(SwitchTable.query(client_id))
    deleted["interruptions"] = _delete_all(InterruptionTable.query(client_id))
    deleted["notifications"] = _delete_all(NotificationTable.query(client_id))
    deleted["agents"] = _delete_all(AgentTable(client_id, agent_id) for agent_id in agent_ids)
    return deleted


def delete_client_row(client_id: str, name: str) -> None:
    """The client's delete's last step: its name lookup, its gate, then its row (after which a repeat is 404)."""
    ClientLookupTable(name_lookup_key(name)).delete()
    clients.delete_gate(client_id)
    ClientTable(client_id).delete()
