"""Failover into another of the agent's interchangeable instance types (issue #11), end to end under moto:
the real sentinel handler and state machine; the replacement is launched as the pool's type and the
hand-over moves the agent to that type."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from components.data_valve import PricePoint

from chalicelib.repositories import pools as pool_repo
from chalicelib.tables import AgentTable
from tests.e2e.failover_support import REGION, configure, deliver, ec2, register_agent, wait_for, warning

pytestmark = pytest.mark.usefixtures("failover_machine")


def test_an_emergency_replacement_goes_to_the_cheapest_pool_of_a_declared_type(api, make_tenant):
    # GIVEN an auto-switch agent in us-east-1a (own type 0.030–0.045 $/h) declaring another type that is
    # cheapest in us-east-1c, every pool equally safe
    client_id, _, agent_id, primary, itype = register_agent(make_tenant)
    other = f"m6i.t{uuid.uuid4().hex[:8]}xl"
    configure(client_id, agent_id, allowed_instance_types=[itype, other])
    now = datetime.now(timezone.utc)
    pool_repo.store_server_prices([PricePoint(pool_id=f"{other}.{REGION}{z}", ts=now - timedelta(minutes=1),
                                              price=Decimal(p), source_agent_id=pool_repo.SERVER_SOURCE)
                                   for z, p in (("b", "0.029"), ("c", "0.012"))], now)
    pool_repo.save_risk([(f"{t}.{REGION}{z}", 0.02, "model", "test") for t, zones in ((itype, "abcd"), (other, "bc"))
                         for z in zones], 3600, now)
    # WHEN the interruption warning arrives
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    # THEN the replacement is an `other` spot instance in us-east-1c and the agent now runs that type
    agent = AgentTable.get(client_id, agent_id, consistent_read=True)
    assert agent.instance_id != primary and agent.current_pool_id == f"{other}.{REGION}c"
    assert agent.instance_type == other and agent.current_mode == "spot"
    described = ec2().describe_instances(InstanceIds=[agent.instance_id])["Reservations"][0]["Instances"][0]
    assert described["InstanceType"] == other and described["Placement"]["AvailabilityZone"] == f"{REGION}c"
