"""The agent loop against the real API (in-process), moto EC2 and the fake IMDS."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta

from chalicelib.repositories import agents as agent_repo
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.pools import PricingReportTable
from tests.agent.conftest import T0, at, identity_of, launch_instance, unique_type


def server_agent(tenant, agent):
    return agent_repo.get(tenant.client_id, agent.agent_id)


def test_start_registers_with_the_imds_identity_and_saves_the_agent_id(tenant, make_agent, imds_factory):
    instance = launch_instance(unique_type())
    imds = imds_factory(identity_of(instance))
    agent = make_agent(imds)
    assert agent.start() == ["registered"]
    row = server_agent(tenant, agent)
    assert row.instance_id == instance["InstanceId"] and row.current_mode == "spot"
    assert row.az == "us-east-1a" and row.agent_version == "5.0.0"
    state = json.loads((agent.config.state_file).read_text())
    assert state["agent_id"] == agent.agent_id and state["instance_id"] == instance["InstanceId"]
    # a restart keeps the same agent (same logical id), it does not create a second one
    again = make_agent(imds)
    again.start()
    assert again.agent_id == agent.agent_id


def test_the_agent_sends_its_signed_identity_and_uses_its_own_credential(tenant, make_agent, imds_factory):
    """GIVEN a client without legacy mode WHEN the agent starts and heartbeats THEN it registered with
    IMDS's signed document (the row holds the verified account and the credential's hash only), keeps
    the credential in its state file, and its agent calls carry the credential, not the client token."""
    from chalicelib.auth import hash_secret

    instance = launch_instance(unique_type())
    agent = make_agent(imds_factory(identity_of(instance)))
    assert agent.start() == ["registered"]
    credential = json.loads(agent.config.state_file.read_text())["agent_credential"]
    assert credential.startswith("soa_") and agent.api.credential == credential
    row = server_agent(tenant, agent)
    assert row.account_id == "123456789012" and row.credential_hash == hash_secret(credential)
    assert "heartbeat" in agent.run_due(T0 + timedelta(seconds=31))
    # a restart re-registers: a new credential, the old one stops working
    again = make_agent(imds_factory(identity_of(instance)))
    again.start()
    assert again.api.credential != credential
    assert server_agent(tenant, again).credential_hash == hash_secret(again.api.credential)


def test_without_a_signed_identity_a_client_without_legacy_mode_refuses_the_agent(tenant, make_agent):
    from localmode.fake_imds import FakeImds
    from spot_agent.api import ApiError

    with FakeImds(identity_of(launch_instance(unique_type())), signed=False) as imds:
        agent = make_agent(imds)
        try:
            agent.start()
        except ApiError as exc:
            assert exc.status == 400 and exc.code == "identity_document_required"
        else:
            raise AssertionError("registration without an identity document was accepted")


def test_on_demand_instances_register_as_ondemand_and_skip_spot_notices(tenant, make_agent, imds_factory):
    imds = imds_factory(identity_of(launch_instance(unique_type(), spot=False)))
    agent = make_agent(imds)
    agent.start()
    assert server_agent(tenant, agent).current_mode == "ondemand"
    agent.run_due(T0)
    assert not any("instance-action" in path for _, path, _ in imds.requests)


def test_run_due_follows_the_cadences_without_sleeping(tenant, make_agent, imds_factory):
    itype = unique_type()
    imds = imds_factory(identity_of(launch_instance(itype)))
    agent = make_agent(imds, heartbeat_s=30, pricing_s=300, notice_s=5, rebalance_s=30)
    agent.start()
    session = agent.api.session
    notice_checks = lambda: sum(1 for _, p, _ in imds.requests if p.endswith("spot/instance-action"))  # noqa: E731
    # t=0: everything is due
    assert agent.run_due(T0) == ["heartbeat", "pricing-report"]
    assert notice_checks() == 1 and session.count("POST", "/heartbeat") == 1
    # t=4 s: nothing; t=5 s: only the termination check
    assert agent.run_due(T0 + timedelta(seconds=4)) == []
    agent.run_due(T0 + timedelta(seconds=5))
    assert notice_checks() == 2 and session.count("POST", "/heartbeat") == 1
    # t=30 s: heartbeat again; pricing not before 300 s
    assert agent.run_due(T0 + timedelta(seconds=30)) == ["heartbeat"]
    assert agent.run_due(T0 + timedelta(seconds=300)) == ["heartbeat", "pricing-report"]
    assert agent.next_due(T0 + timedelta(seconds=300)) == T0 + timedelta(seconds=305)
    # the price report reached the store with the per-AZ pools and the on-demand price
    report = next(PricingReportTable.query(agent.agent_id, scan_index_forward=False))
    assert report.pools_reported == 3 and float(report.on_demand_price) == 0.096
    assert report.cheapest_pool_id == f"{itype}.us-east-1b"


def test_jitter_spreads_the_next_heartbeat_within_its_bound(make_agent, imds_factory):
    imds = imds_factory(identity_of(launch_instance(unique_type())))
    agent = make_agent(imds, jitter=0.1, heartbeat_s=30)
    agent.start()
    agent.run_due(T0)
    offset = (agent._next["heartbeat"] - T0).total_seconds()
    assert 27 <= offset <= 33 and offset != 30


def test_a_termination_notice_is_reported_at_once_and_only_once(tenant, make_agent, imds_factory,
                                                                failover_machine):
    instance = launch_instance(unique_type())
    imds = imds_factory(identity_of(instance))
    agent = make_agent(imds)
    agent.start()
    agent.run_due(T0)
    # WHEN the two-minute notice appears
    imds.set_instance_action("terminate", at(125))
    actions = agent.run_due(T0 + timedelta(seconds=5))
    # THEN it is reported on the next 5-s check, and the heartbeat is pulled forward
    assert actions[0] == "termination-imminent" and "heartbeat" in actions
    status, reply = tenant.caller.get(f"/api/agents/{agent.agent_id}/interruptions")
    assert status == 200 and reply["interruptions"][0]["signal_type"].startswith("termination")
    assert reply["interruptions"][0]["source"] == "agent"
    # AND later checks do not report it again
    assert "termination-imminent" not in agent.run_due(T0 + timedelta(seconds=10))
    # AND once the failover has moved the agent, a restart on the old instance retires: it neither
    # reports the notice again nor takes the logical agent back to the dying instance
    replacement = _wait_until_moved(tenant, agent, instance["InstanceId"])
    restarted = make_agent(imds)
    assert restarted.start() == ["retired"]
    assert "termination-imminent" not in restarted.run_due(T0 + timedelta(seconds=15))
    assert restarted.api.session.count("POST", "/termination-imminent") == 0
    assert restarted.api.session.count("POST", "/heartbeat") == 0
    assert server_agent(tenant, agent).instance_id == replacement


def _wait_until_moved(tenant, agent, old_instance_id: str, timeout: float = 60) -> str:
    """The failover runs in moto's Step Functions threads; wait for its hand-over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = server_agent(tenant, agent).instance_id
        if current != old_instance_id:
            return current
        time.sleep(0.05)
    raise AssertionError("the failover did not hand the agent over")


def test_an_agent_on_a_standby_waits_and_registers_once_promoted(tenant, make_agent, imds_factory):
    itype = unique_type()
    primary = make_agent(imds_factory(identity_of(launch_instance(itype))))
    primary.start()
    standby = launch_instance(itype, az="us-east-1b")
    InstanceTable(standby["InstanceId"], client_id=tenant.client_id, agent_id=primary.agent_id,
                  instance_type=itype, region="us-east-1", az="us-east-1b", role="standby", is_active=True,
                  installed_at=T0, updated_at=T0).save()
    # the standby's own agent (same logical id, its own state) is told to wait
    agent = make_agent(imds_factory(identity_of(standby)), state_dir=str(primary.config.state_file.parent) + "-sb")
    assert agent.start() == ["standby"] and agent.agent_id is None
    assert agent.run_due(T0) == []
    assert server_agent(tenant, primary).instance_id != standby["InstanceId"]
    # a failover promotes it: the next attempt (heartbeat cadence) registers and the agent works
    InstanceTable(standby["InstanceId"]).update(actions=[InstanceTable.role.set("primary")])
    assert agent.run_due(T0 + timedelta(seconds=15)) == []
    assert agent.run_due(T0 + timedelta(seconds=30)) == ["registered"]
    assert server_agent(tenant, agent).instance_id == standby["InstanceId"]
    assert "heartbeat" in agent.run_due(T0 + timedelta(seconds=31))


def test_a_rebalance_recommendation_is_reported_once_per_notice(tenant, make_agent, imds_factory):
    imds = imds_factory(identity_of(launch_instance(unique_type())))
    agent = make_agent(imds)
    agent.start()
    agent.run_due(T0)
    imds.set_rebalance(at(20))
    assert "rebalance-recommendation" in agent.run_due(T0 + timedelta(seconds=30))
    assert "rebalance-recommendation" not in agent.run_due(T0 + timedelta(seconds=60))
    # a notice that clears and comes back is a new notice
    imds.clear_notices()
    agent.run_due(T0 + timedelta(seconds=90))
    imds.set_rebalance(at(300))
    assert "rebalance-recommendation" in agent.run_due(T0 + timedelta(seconds=120))
    assert agent.api.session.count("POST", "/rebalance-recommendation") == 2


def test_a_disabled_agent_reports_disabled_and_gets_no_commands(tenant, make_agent, imds_factory):
    imds = imds_factory(identity_of(launch_instance(unique_type())))
    agent = make_agent(imds)
    agent.start()
    agent.run_due(T0)
    status, _ = tenant.caller.post(f"/api/client/agents/{agent.agent_id}/config", {"enabled": False})
    assert status == 200
    # the next heartbeat (default cadence) sees a new config_version and fetches the config
    beat = timedelta(seconds=agent.config.heartbeat_s)
    assert "config" in agent.run_due(T0 + beat)
    agent.run_due(T0 + 2 * beat)
    assert server_agent(tenant, agent).status == "disabled"


def test_a_heartbeat_for_an_agent_the_server_forgot_registers_again(tenant, make_agent, imds_factory):
    imds = imds_factory(identity_of(launch_instance(unique_type())))
    agent = make_agent(imds)
    agent.start()
    agent.state.update(agent_id="ag-forgotten")
    assert "registered" in agent.run_due(T0)
    assert agent.agent_id != "ag-forgotten" and server_agent(tenant, agent) is not None


def test_sigterm_stops_run_forever_with_a_final_offline_heartbeat(tenant, make_agent, imds_factory):
    imds = imds_factory(identity_of(launch_instance(unique_type())))
    agent = make_agent(imds, heartbeat_s=0.2, notice_s=0.2)
    stop = threading.Event()
    timer = threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    previous = signal.getsignal(signal.SIGTERM)
    timer.start()
    try:
        agent.run_forever(stop)  # returns once SIGTERM set the event
    finally:
        timer.cancel()
    assert stop.is_set() and signal.getsignal(signal.SIGTERM) is previous  # handler restored
    calls = [path for method, path in agent.api.session.calls if path.endswith("/heartbeat")]
    assert len(calls) >= 2
    assert server_agent(tenant, agent).status == "offline"


def test_declared_instance_types_are_sent_at_registration(tenant, make_agent, imds_factory):
    itype, other = unique_type(), unique_type()
    instance = launch_instance(itype)
    agent = make_agent(imds_factory(identity_of(instance)), instance_types=f"{other}, ")
    assert agent.start() == ["registered"]
    assert server_agent(tenant, agent).runnable_types == (itype, other)


def test_an_agent_without_a_credential_registers_again_when_the_client_leaves_legacy_mode(
        tenant, make_agent, imds_factory, admin):
    """GIVEN an agent registered while its client was in legacy mode (no credential) WHEN the admin turns
    legacy mode off THEN its next heartbeat is refused, it registers with its signed document and
    carries on with its new credential."""
    assert admin.post(f"/api/admin/clients/{tenant.client_id}/legacy-agents", {"enabled": True})[0] == 200
    imds = imds_factory(identity_of(launch_instance(unique_type())))
    imds.signed = False
    agent = make_agent(imds)
    assert agent.start() == ["registered"] and agent.api.credential is None
    assert admin.post(f"/api/admin/clients/{tenant.client_id}/legacy-agents", {"enabled": False})[0] == 200
    imds.signed = True
    assert "registered" in agent.run_due(T0 + timedelta(seconds=31))
    assert agent.api.credential and agent.api.credential.startswith("soa_")
    assert "heartbeat" in agent.run_due(T0 + timedelta(seconds=31 + agent.config.heartbeat_s))


def test_a_server_url_without_the_agent_routes_stops_the_agent_instead_of_retrying(tenant, make_agent, imds_factory,
                                                                                     monkeypatch):
    """GIVEN an agent whose server answers its registration 404 route_not_found (the URL is not the API's stage)
    WHEN it runs THEN it stops with a FatalError naming the setting, as for a refused token (it retried forever,
    its 404 read like an unknown agent); the server's code is the agent's constant."""
    import pytest

    from chalicelib.errors import RouteNotFoundError, unknown_route
    from spot_agent.agent import FatalError
    from spot_agent.api import ROUTE_NOT_FOUND, ApiError

    assert ROUTE_NOT_FOUND == RouteNotFoundError.code
    agent = make_agent(imds_factory(identity_of(launch_instance(unique_type()))))
    answer = {"error": unknown_route().code, "message": unknown_route().message}
    calls, stop = [], threading.Event()

    def no_route():
        calls.append(1)
        if len(calls) == 2:
            stop.set()  # a retrying agent gives up here, without the error
        raise ApiError("POST", "/api/agents/register", 404, answer)

    monkeypatch.setattr(agent, "start", no_route)
    with pytest.raises(FatalError, match="SPOT_OPTIMIZER_SERVER_URL"):
        agent._start_with_retry(stop)
    assert calls == [1]
    assert ApiError("POST", "/api/agents/x/heartbeat", 404, {"error": "not_found"}).no_such_route is False
