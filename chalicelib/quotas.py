"""Per-client quotas and instance-type policy, checked before anything is written or launched.

Quotas (defaults in settings, admin overrides per client): agents, live instances the product launched for
the client (counted in EC2 by our tags, every region the client's agents are in), and the standby $/h (the
active standbys' recorded prices plus the new one's). Exceeded → QuotaExceeded (409 ``quota_exceeded``).

Failover never loses service to a quota: a replacement for an interruption is exempt from the standby $/h
quota and may exceed the instance quota by one (the interrupted instance is about to go). The instance-type
policy (components.instance_types.policy) applies to every launch, the failover's included.
"""

from __future__ import annotations

from decimal import Decimal

from components.instance_types.policy import TypePolicy, refusal, refusals
from components.replica_coordinator import ReplicaType

from chalicelib import catalogue, tenancy
from chalicelib.aws import ec2
from chalicelib.errors import ConflictError
from chalicelib.repositories import clients
from chalicelib.repositories import replicas as replica_repo
from chalicelib.repositories.agents import GONE_STATUSES
from chalicelib.settings import get_settings
from chalicelib.tables.agents import AgentTable

FAILOVER_HEADROOM = 1  # live instances an interruption's replacement may exceed the quota by


class QuotaExceeded(ConflictError, ec2.LaunchError):
    """A per-client quota would be exceeded: 409 to the API (nothing written), a clean launch failure to the
    workflows."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="quota_exceeded")


class TypeNotAllowed(ec2.LaunchError):
    """The instance type is outside the client's policy: a launch fails cleanly, the API answers 409."""

    conflict_code = "instance_type_not_allowed"


def _limits(client_id: str) -> dict:
    client = clients.get(client_id)
    return dict(client.limits) if client else {}


def limits(client_id: str, *, own: dict | None = None) -> dict:
    """The client's effective quotas and policy (overrides over the settings' defaults; ``own``: the overrides
    when already read)."""
    settings, own = get_settings(), _limits(client_id) if own is None else own

    def pick(name, default):
        return own.get(name) if own.get(name) is not None else default
    return {"max_agents": pick("max_agents", settings.quota_max_agents),
            "max_instances": pick("max_instances", settings.quota_max_instances),
            "max_standby_usd_per_hour": pick("max_standby_usd_per_hour", settings.quota_max_standby_usd_per_hour),
            "max_instance_vcpus": pick("max_instance_vcpus", settings.max_instance_vcpus),
            "max_switches_per_agent_per_day": pick("max_switches_per_agent_per_day",
                                                   settings.quota_max_switches_per_agent_per_day),
            "allow_accelerated_types": bool(pick("allow_accelerated_types", False)),
            "allowed_instance_families": list(own.get("allowed_instance_families") or [])}


def type_policy(client_id: str) -> TypePolicy:
    found = limits(client_id)
    return TypePolicy(max_vcpus=int(found["max_instance_vcpus"]), allow_accelerated=found["allow_accelerated_types"],
                      families=tuple(found["allowed_instance_families"]))


def check_types(client_id: str, instance_types) -> None:
    """TypeNotAllowed (409) naming every refused type (registration, config of allowed types)."""
    refused = refusals([t for t in instance_types if t], type_policy(client_id), catalogue.catalogue())
    if refused:
        raise TypeNotAllowed("; ".join(refused))


def _is_deleted(agent: AgentTable) -> bool:
    """Deleted (or terminated) agents count toward no agent quota but the deleted ones'."""
    return agent.deleted_at is not None or agent.status in GONE_STATUSES


def _client_agents(client_id: str) -> list[AgentTable]:
    return [a for a in AgentTable.query(client_id) if not _is_deleted(a)]


def check_agents(client_id: str, *, adding: int = 1, reviving: bool = False) -> int:
    """QuotaExceeded when registering ``adding`` more agents would pass the client's max_agents, or, for a new
    agent id (not ``reviving`` a deleted one), when the client already keeps ``QUOTA_MAX_DELETED_AGENTS`` deleted
    agents (kept ``AGENT_RETENTION_DAYS`` for their history, then removed by the data cleaner): register and
    delete must not grow the client's partition without bound. One read of the client's partition for both.

    Returns the highest value of the client row's ``agent_admissions`` (a counter every admitted registration
    bumps) at which this registration may still be written: its value read before the count, plus the room the
    count left beyond this registration. The write bumps it on that condition (``agents.register``): registrations
    counted concurrently all land while the quota has room for each (a v4 fleet booting together), and the ones
    past it count again (and are refused) instead of all passing the quota. An admission counted but not bumped
    (a stale read of the client row) only lowers the ceiling."""
    client = clients.get(client_id)
    admission = client.agent_admissions if client else 0
    cap = int(limits(client_id, own=dict(client.limits) if client else {})["max_agents"])
    rows = list(AgentTable.query(client_id, consistent_read=True))  # every registration committed so far
    count = sum(1 for a in rows if not _is_deleted(a))
    if count + adding > cap:
        raise QuotaExceeded(f"agent quota reached: {count} of {cap} agents; ask the operator to raise max_agents")
    kept, settings = len(rows) - count, get_settings()
    if not reviving and kept >= settings.quota_max_deleted_agents:
        raise QuotaExceeded(f"{kept} deleted agents are kept ({settings.agent_retention_days} days, for their "
                            f"history; limit {settings.quota_max_deleted_agents}): register under a deleted "
                            "agent's logical id to reuse it, or ask the operator")
    return admission + (cap - count - adding)


Fleet = list[tuple[AgentTable, list]]  # the client's agents, each with its open replicas


def _fleet(client_id: str) -> Fleet:
    """The client's agents and their open replicas, read once for both quotas of a launch."""
    return [(agent, replica_repo.for_agent(agent.agent_id, include_final=False)) for agent in _client_agents(client_id)]


def live_instances(client_id: str, *, fleet: Fleet | None = None) -> int:
    """Live instances this stage launched for the client (EC2, by tags), in every region its agents are in and every
    region one of their active standbys was launched in: an agent registered again in another region leaves its
    standby where it was, and that region must still count. Each (region, account) is described once.
    ``fleet``: ``_fleet(client_id)`` when the caller read it already."""
    places: set[tuple[str, str | None]] = set()
    for agent, standbys in _fleet(client_id) if fleet is None else fleet:
        account_id = getattr(agent, "account_id", None)
        places |= {(region, account_id) for region in {agent.region, *(r.region for r in standbys)} if region}
    seen: set[str] = set()
    for region, account_id in sorted(places, key=str):
        account = tenancy.for_client(client_id, account_id)
        seen |= {i.instance_id for i in ec2.managed_instances(region, account=account, client_id=client_id)}
    return len(seen)


def check_launch(agent, instance_type: str, replica=None, *, failover: bool | None = None,
                 price: Decimal | None = None) -> None:
    """Before any launch for ``agent``: the type policy, then the instance quota (an interruption's replacement
    may go FAILOVER_HEADROOM over), then the standby $/h quota (not for a failover replacement)."""
    why = refusal(instance_type, type_policy(agent.client_id), catalogue.catalogue())
    if why:
        raise TypeNotAllowed(why)
    if failover is None:
        failover = bool(replica is not None and replica.replica_type == ReplicaType.TERMINATION.value)
    found = limits(agent.client_id)
    cap = int(found["max_instances"]) + (FAILOVER_HEADROOM if failover else 0)
    fleet = _fleet(agent.client_id)
    live = live_instances(agent.client_id, fleet=fleet)
    if replica is not None and replica.instance_id:
        live -= 1  # already running: not a new one
    if live + 1 > cap:
        raise QuotaExceeded(f"instance quota reached: {live} live instances launched for this client "
                            f"(limit {found['max_instances']}); ask the operator to raise max_instances")
    if failover:
        return
    spend = standby_spend(agent.client_id, exclude=replica.replica_id if replica is not None else None, fleet=fleet)
    new = float(price if price is not None else _price_of(replica, instance_type, agent.region))
    cap_usd = float(found["max_standby_usd_per_hour"])
    if spend + new > cap_usd:
        raise QuotaExceeded(f"standby spend quota reached: {spend:.4f} $/h running + {new:.4f} $/h would pass "
                            f"{cap_usd:.2f} $/h; ask the operator to raise max_standby_usd_per_hour")


def _price_of(replica, instance_type: str, region: str | None) -> float:
    """The replica's recorded price, else the type's on-demand list price in ``region`` (an upper bound for spot),
    else 0."""
    if replica is not None and replica.hourly_cost is not None:
        return float(replica.hourly_cost)
    return float(catalogue.ondemand_price(instance_type, region) or 0)


def standby_spend(client_id: str, *, exclude: str | None = None, fleet: Fleet | None = None) -> float:
    """$/h of the client's active standbys (recorded price, else the on-demand list price of their type);
    ``fleet`` as for ``live_instances``."""
    total = 0.0
    for agent, open_replicas in _fleet(client_id) if fleet is None else fleet:
        for replica in open_replicas:
            if replica.replica_id == exclude or replica.status.value == "promoted":
                continue
            total += _price_of(replica, replica.instance_type or agent.instance_type or "", agent.region)
    return total
