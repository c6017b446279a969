"""Security walk 14: what an outside team tries first after the latest changes — the client switch queue
(``issue-switch-command``'s duplicate answer, its engine-chosen path, a switch racing the agent's delete), the
pagination cursors of one listing replayed on another, odd JSON on the switch routes, a deleted client's token, an
agent credential on the client routes that live under ``/api/agents/``, and the CSV exports' answers. Each test is
one attack; its docstring says what it tries and what holds (and, when it found something, what happened before the
fix)."""

from __future__ import annotations

import pytest

from chalicelib import bootstrap, command_queue
from tests.api._support import diff_snapshots, snapshot_tables
from tests.api.test_security_walk_7 import _first_calls_meet, _together
from tests.integration.test_decisions import _set_risk, settled_agent  # noqa: F401,F811 - a fixture


def _unchanged_but_rate_limits(before) -> None:
    changed = diff_snapshots(before, snapshot_tables())
    assert set(changed) <= {t for t in changed if t.endswith("-rate-limits")}, changed


# --- the client switch queue ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("atomic_moto_requests")
def test_racing_switch_requests_without_a_target_queue_one_switch(settled_agent, monkeypatch):  # noqa: F811
    """The attack (or a console retrying on a slow answer): four ``issue-switch-command`` requests without a target
    (the engine chooses it) at the same moment, each past the read of the agent's empty queue before any writes.
    BEFORE: each queued its own switch of the same instance to the same pool: four pending commands, all handed
    out by the agent's next poll, and a legacy agent runs every switch it is handed (four replacements launched;
    the explicit-target path, ``queue_client_switch``, already guarded this race, this path did not). NOW: the write
    is conditional on no client switch having been queued since the agent row was read: one request queues the
    switch (201), the others find the queue taken (200, ``queued: false``), one command is delivered."""
    client_id, caller, agent_id, itype = settled_agent
    _set_risk(itype, {"a": 0.01, "b": 0.01, "c": 0.01})
    _first_calls_meet(monkeypatch, command_queue, "switch_command", 4)
    results = _together([lambda: caller.post(f"/api/agents/{agent_id}/issue-switch-command", {})
                         for _ in range(4)])
    assert sorted(status for status, _ in results) == [200, 200, 200, 201], results
    queued = [reply["command"]["id"] for status, reply in results if status == 201]
    assert all(reply["queued"] is False for status, reply in results if status == 200), results
    active = bootstrap.command_store().active_for_agent(agent_id, 50)
    assert [c.command_id for c in active] == queued
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands")
    assert status == 200 and [c["id"] for c in reply["commands"]] == queued, reply
