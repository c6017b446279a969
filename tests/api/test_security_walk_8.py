"""Security walk 8: what a tenant's agent signals, time fields and odd-but-valid input can do to other tenants and
to the service's shared data. Each test is one attack; its docstring says what happened before the fix (when it
found something) and what holds now."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.repositories import observations
from chalicelib.tables.interruptions import InterruptionTable
from tests.api._support import now_utc
from tests.e2e.failover_support import register_agent, wait_for


def _wait_for_failovers(client_id: str) -> None:
    """Let every workflow this tenant started finish before the next test snapshots the tables."""
    for row in InterruptionTable.query(client_id, consistent_read=True):
        if row.execution_arn:
            wait_for(row.execution_arn)


# --- an agent's signal is its own client's evidence only ----------------------------------------------------------


@pytest.mark.usefixtures("failover_machine")
def test_an_agents_termination_notice_puts_no_pool_in_back_off_for_other_tenants(make_tenant):
    """ATTACK (shared capacity data): a client's agent posts ``termination-imminent`` for its own spot instance (an
    unverifiable claim: nothing but the client's word says AWS sent a notice). BEFORE: the sentinel recorded it as
    an interruption warning the product saw itself: the pool went into capacity back-off for every tenant's
    decisions, failovers and standbys (10 minutes, growing with each repeat) and into the fleet's risk evidence.
    NOW: an agent's (or a client's) signal is a report, counted for its own client's placements and risk only, as
    its capacity reports are (tests/api/test_capacity_reports_scoped.py); EventBridge's copy of the same notice
    still counts for everyone."""
    attacker_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    victim_id, _ = make_tenant()
    pool = f"{itype}.us-east-1a"
    status, reply = caller.post(f"/api/agents/{agent_id}/termination-imminent", {"instance_id": primary})
    assert status == 202 and reply["action"] == "failover_started", reply
    _wait_for_failovers(attacker_id)
    now = now_utc()
    assert pool not in observations.backoff([pool], now, viewer=victim_id)
    assert observations.for_pools([pool], now - timedelta(hours=1), viewer=observations.FLEET)[pool] == []
    assert pool in observations.backoff([pool], now, viewer=attacker_id)  # its own placements honour it


def test_an_agents_rebalance_recommendation_stays_out_of_the_fleets_risk_evidence(make_tenant):
    """ATTACK (shared risk data): the same with ``rebalance-recommendation``, which starts no failover and costs
    the client nothing: repeated every signal window it fed the fleet-wide risk scorer a stream of rebalance
    recommendations for the pool. NOW: its client's evidence only."""
    attacker_id, caller, agent_id, primary, itype = register_agent(make_tenant)
    pool = f"{itype}.us-east-1a"
    status, reply = caller.post(f"/api/agents/{agent_id}/rebalance-recommendation", {"instance_id": primary})
    assert status == 200 and reply["interruption_id"], reply
    since = now_utc() - timedelta(hours=1)
    assert observations.for_pools([pool], since, viewer=observations.FLEET)[pool] == []
    assert [o.kind.value for o in observations.for_pools([pool], since, viewer=attacker_id)[pool]] \
        == ["rebalance_recommendation"]
