"""The live-instances index (``InstanceTable.live``): every write keeps ``live_client_id == client_id`` exactly while
a row is active, through the flows that open and close instance rows (registration, switch report, termination
report, agent delete, standby launch and promotion, failover), and the readers still answer right on a stage whose
index is not ready yet (rows written before it existed lack the key: the filtered read of the client's history)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.repositories import job_state, sparse_indexes
from chalicelib.tables.instances import LIVE_INSTANCES, InstanceTable
from tests.api._support import assert_error, iso, now_utc, switch_body
from tests.api.read_scaling_support import History, history, live_fleet
from tests.conftest import account_instance, registration
from tests.e2e.failover_support import deliver, register_agent, wait_for, warning

pytestmark = pytest.mark.usefixtures("fleet_jobs_see_this_test_only")


def assert_live_key_kept(client_id: str) -> list[InstanceTable]:
    """Every instance row of the client carries ``live_client_id`` (= its client) iff it is active, and the live
    index lists exactly the active rows. Returns the rows."""
    rows = list(InstanceTable.by_client.query(client_id))
    wrong = [(r.instance_id, r.is_active, r.live_client_id) for r in rows
             if r.live_client_id != (r.client_id if r.is_active else None)]
    assert wrong == [], wrong
    assert sorted(r.instance_id for r in InstanceTable.live.query(client_id)) == \
        sorted(r.instance_id for r in rows if r.is_active)
    return rows


def _active(rows) -> set[str]:
    return {r.instance_id for r in rows if r.is_active}


def _timing(terminated: bool) -> dict:
    start = now_utc() - timedelta(hours=1)
    timing = {"switch_initiated_at": iso(start), "new_instance_launched_at": iso(start + timedelta(seconds=40)),
              "new_instance_ready_at": iso(start + timedelta(seconds=90)),
              "traffic_switched_at": iso(start + timedelta(seconds=92))}
    if terminated:
        timing["old_instance_terminated_at"] = iso(start + timedelta(seconds=400))
    return timing


def test_registration_switch_termination_and_delete_keep_the_key(tenant_with_agent):
    """GIVEN an agent WHEN it switches (old one terminated), registers again on another instance, reports its
    termination, and a second agent is deleted THEN after each step every row of the client has the key iff active."""
    client_id, caller, agent_id, reg = tenant_with_agent
    assert _active(assert_live_key_kept(client_id)) == {reg["instance_id"]}

    switched = account_instance("eu-west-1b")
    status, reply = caller.post(f"/api/agents/{agent_id}/switch-report",
                                switch_body(reg["instance_id"], switched, timing=_timing(terminated=True)))
    assert status == 200 and reply["duplicate"] is False, reply
    assert _active(assert_live_key_kept(client_id)) == {switched}

    moved = registration(logical_agent_id=reg["logical_agent_id"])
    status, reply = caller.post("/api/agents/register", moved)
    assert status == 200 and reply["agent_id"] == agent_id, reply
    assert _active(assert_live_key_kept(client_id)) == {moved["instance_id"]}

    status, reply = caller.post(f"/api/agents/{agent_id}/termination",
                                {"instance_id": moved["instance_id"], "reason": "spot interruption"})
    assert status == 200, reply
    assert _active(assert_live_key_kept(client_id)) == set()

    other = registration(logical_agent_id="other")
    status, reply = caller.post("/api/agents/register", other)
    assert status == 200, reply
    assert _active(assert_live_key_kept(client_id)) == {other["instance_id"]}
    assert caller.call("DELETE", f"/api/client/agents/{reply['agent_id']}")[0] == 200
    assert _active(assert_live_key_kept(client_id)) == set()


@pytest.mark.usefixtures("failover_machine")
def test_a_standby_launched_and_promoted_keeps_the_key(api, make_tenant):
    """GIVEN an agent in manual-replica mode WHEN a standby is launched, then promoted (the old primary closed)
    THEN the standby's row is in the live index while it runs, and after the promotion only the new primary is."""
    client_id, caller, agent_id, primary, _ = register_agent(make_tenant)
    status, reply = caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})
    assert status == 200, reply
    status, standby = caller.post(f"/api/agents/{agent_id}/replicas", {})
    assert status == 201, standby
    assert _active(assert_live_key_kept(client_id)) == {primary, standby["instance_id"]}

    status, reply = caller.post(f"/api/agents/{agent_id}/replicas/{standby['replica_id']}/promote",
                                {"demote_old_primary": True, "wait_for_sync": False})
    assert status == 202, reply
    assert wait_for(reply["interruption_id"])["status"] == "SUCCEEDED"
    rows = assert_live_key_kept(client_id)
    assert standby["instance_id"] in _active(rows) and primary not in _active(rows)


@pytest.mark.usefixtures("failover_machine")
def test_a_failover_replacement_keeps_the_key(api, make_tenant):
    """GIVEN an auto-switch agent without a standby WHEN its spot instance is interrupted THEN the emergency
    replacement is the one active row, in the live index, and the interrupted one is out of it."""
    client_id, _, agent_id, primary, _ = register_agent(
        make_tenant, prices={"us-east-1a": 0.030, "us-east-1b": 0.031, "us-east-1c": 0.050})
    result = deliver(api, "sentinel-interruption", warning(primary))
    assert wait_for(result["execution_arn"])["status"] == "SUCCEEDED"
    active = _active(assert_live_key_kept(client_id))
    assert primary not in active and len(active) == 1


@pytest.mark.parametrize("action", [lambda: InstanceTable.is_active.set(False),
                                    lambda: InstanceTable.client_id.set("cl-another")], ids=["is_active", "client_id"])
def test_an_update_of_what_the_key_derives_from_without_the_key_is_refused(action):
    """The guard: a writer that sets ``is_active`` or ``client_id`` by hand (forgetting the key) fails before
    anything is sent, alone or in a transaction."""
    from pynamodb.transactions import TransactWrite

    from chalicelib.repositories.dynamo import transaction_connection

    with pytest.raises(ValueError, match="live_client_id"):
        InstanceTable("i-0123456789abcdef0").update(actions=[action()])
    with pytest.raises(ValueError, match="live_client_id"), TransactWrite(connection=transaction_connection()) as tx:
        tx.update(InstanceTable("i-0123456789abcdef0"), actions=[action()])


# --- a stage whose live index is not ready yet: the readers' fallback ---------------------------------------------

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def index_not_ready(aws_tables):
    """The live index as on a stage upgraded in place: not ready, its backfill not begun."""
    job_state.set_position(f"sparse-index#{LIVE_INSTANCES.name}", {}, NOW)
    sparse_indexes.forget_ready()
    yield
    sparse_indexes.mark_ready(LIVE_INSTANCES, NOW)


def test_before_the_backfill_the_routes_read_the_active_rows_written_without_the_key(make_tenant, admin,
                                                                                      index_not_ready):
    """GIVEN a client whose 3 active rows and 40 closed ones were written before the index (no key) and an index
    not ready WHEN the overview, charts, active instances (paged) and admin client page are read THEN each shows
    the 3 active instances (an index read would show none), and an active-listing token is the history's shape."""
    client_id, caller = make_tenant()
    fleet = live_fleet(caller)
    live = [instance_id for _, instance_id in fleet]
    history(client_id, fleet[-1][0], History(instances=40))
    for instance_id in live:  # as the code before the index wrote them
        InstanceTable(instance_id).update(actions=[InstanceTable.live_client_id.remove()])
    assert list(InstanceTable.live.query(client_id)) == []
    assert not sparse_indexes.ready(LIVE_INSTANCES)

    c = f"/api/client/{client_id}"
    status, reply = caller.get(c)
    assert status == 200 and reply["instances_active"] == 3, reply
    status, reply = caller.get(f"{c}/stats/charts")
    assert status == 200 and reply["mode_distribution"]["spot"] == 3, reply
    listed, token = [], None
    for _ in range(5):
        status, reply = caller.get(f"{c}/instances?status=active&limit=2" + (f"&next_token={token}" if token else ""))
        assert status == 200, reply
        listed += [row["instance_id"] for row in reply["instances"]]
        token = reply["next_token"]
        if token is None:
            break
    assert sorted(listed) == sorted(live)
    [row] = [r for r in _admin_clients(admin) if r["client_id"] == client_id]
    assert row["instances_active"] == 3, row


def _admin_clients(admin) -> list[dict]:
    rows, token = [], None
    while True:
        status, reply = admin.get("/api/admin/clients?limit=200" + (f"&next_token={token}" if token else ""))
        assert status == 200, reply
        rows += reply["clients"]
        token = reply["next_token"]
        if token is None:
            return rows


def test_a_token_of_the_other_listing_is_a_clean_400(tenant_with_agent):
    """The active listing pages through the live index with its own token: one of the history's shape (issued before
    the index was ready, or by ``status=all``) is read there as the same position of the caller's instances, and one
    of the active listing is a 400 for ``status=all``, never a 500."""
    client_id, caller, _, _ = tenant_with_agent
    for n in range(2):
        status, reply = caller.post("/api/agents/register", registration(logical_agent_id=f"more-{n}"))
        assert status == 200, reply
    c = f"/api/client/{client_id}/instances"
    tokens = {}
    for status_filter in ("active", "all"):
        status, reply = caller.get(f"{c}?status={status_filter}&limit=1")
        assert status == 200 and reply["next_token"], reply
        tokens[status_filter] = reply["next_token"]
    status, reply = caller.get(f"{c}?status=active&limit=1&next_token={tokens['all']}")
    assert status == 200 and len(reply["instances"]) == 1, reply  # the history's shape: the same position
    status, reply = caller.get(f"{c}?status=all&limit=1&next_token={tokens['active']}")
    assert_error(status, reply, 400, field="next_token")
