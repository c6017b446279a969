"""Exactly-once command execution against the real API: crashes, lost acknowledgements, targeting."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import bootstrap
from components.command_tracker import CommandPriority, enqueue, new_command
from spot_agent.commands import INTERRUPTED, run_hook
from tests.agent.conftest import T0, identity_of, launch_instance, unique_type


class Crash(BaseException):
    """What a kill -9 looks like from inside: nothing after it runs (not an Exception, so not caught)."""


def queue(agent, kind: str, instance_id: str | None) -> str:
    """A command for the agent, as the server's failover/decision code would enqueue it."""
    cid = f"cmd-test-{uuid.uuid4().hex[:12]}"
    enqueue(bootstrap.command_store(), new_command(
        command_id=cid, client_id=agent.state["client_id"], agent_id=agent.agent_id, command_type=kind,
        priority=CommandPriority.EMERGENCY, now=datetime.now(timezone.utc), instance_id=instance_id,
        trigger="interruption", created_by="test", policy=bootstrap.lease_policy()))
    return cid


def stored(agent, cid):
    return bootstrap.command_store().get(agent.agent_id, cid)


def hook_appending_to(path) -> str:
    return f'echo "$SPOT_COMMAND_TYPE $SPOT_COMMAND_ID" >> {path}'


@pytest.fixture
def running(make_agent, imds_factory, tmp_path):
    """A started agent on a spot instance, with a promote hook that appends to a file."""
    instance = launch_instance(unique_type())
    imds = imds_factory(identity_of(instance))
    runs = tmp_path / "hook-runs.txt"

    def start(**kw):
        hooks = {"promote_hook": hook_appending_to(runs), "drain_hook": hook_appending_to(runs)}
        agent = make_agent(imds, **{**hooks, **kw})
        agent.start_actions = agent.start()
        return agent

    start.instance_id, start.runs = instance["InstanceId"], runs
    return start


def lines(path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_promote_runs_its_hook_with_the_command_in_the_environment(running):
    agent = running()
    cid = queue(agent, "promote", running.instance_id)
    actions = agent.run_due(T0)
    assert f"executed {cid}" in actions and f"reported {cid}" in actions
    assert lines(running.runs) == [f"promote {cid}"]
    assert stored(agent, cid).status.value == "completed" and "promote hook exited 0" in stored(agent, cid).message
    # the next heartbeat gets nothing more: the command is final
    agent.run_due(T0 + timedelta(seconds=30))
    assert lines(running.runs) == [f"promote {cid}"]


def test_a_crash_mid_command_is_reported_failed_after_restart_and_never_rerun(running):
    # GIVEN a delivered promote whose execution "crashes" right after the hook ran
    def crashing_runner(command, *, env, timeout):
        run_hook(command, env=env, timeout=timeout)
        raise Crash()

    agent = running(hook_runner=crashing_runner)
    cid = queue(agent, "promote", running.instance_id)
    with pytest.raises(Crash):
        agent.run_due(T0)
    assert agent.state["current"]["command_id"] == cid  # "executing" was on disk before the hook
    assert stored(agent, cid).status.value == "executing"
    # WHEN the agent restarts on the same state dir (the lease still holds, so the server re-delivers)
    restarted = running()
    assert restarted.start_actions == [f"recovered {cid}", "registered", f"reported {cid}"]
    restarted.run_due(T0 + timedelta(seconds=1))
    restarted.run_due(T0 + timedelta(seconds=31))
    # THEN the hook ran once, the result "failed: interrupted by an agent restart" was reported once
    assert lines(running.runs) == [f"promote {cid}"]
    command = stored(restarted, cid)
    assert command.status.value == "failed" and command.message == INTERRUPTED
    assert restarted.api.session.count("POST", f"/commands/{cid}/executed") == 1
    assert restarted.state["current"] is None and restarted.state["unacked"] == {}


def test_a_result_the_server_never_acknowledged_is_reported_after_restart_not_rerun(running, tenant):
    # GIVEN the server goes down right after the hook ran (the result cannot be reported)
    session = tenant.session()

    def runner_then_outage(command, *, env, timeout):
        result = run_hook(command, env=env, timeout=timeout)
        session.down = True
        return result

    agent = running(hook_runner=runner_then_outage, session=session)
    cid = queue(agent, "promote", running.instance_id)
    actions = agent.run_due(T0)
    assert f"executed {cid}" in actions and f"reported {cid}" not in actions
    assert list(agent.state["unacked"]) == [cid] and stored(agent, cid).status.value == "executing"
    # WHEN the agent restarts and the server is back
    restarted = running()
    # THEN start-up reports the stored result; the hook did not run again
    assert restarted.start_actions == ["registered", f"reported {cid}"]
    assert stored(restarted, cid).status.value == "completed"
    assert lines(running.runs) == [f"promote {cid}"]
    restarted.run_due(T0 + timedelta(seconds=1))
    assert lines(running.runs) == [f"promote {cid}"] and restarted.state["unacked"] == {}


def test_a_redelivered_finished_command_is_re_reported_not_re_run(running):
    # GIVEN a result the agent thinks was lost (acknowledgement forgotten), server still leasing it
    agent = running()
    cid = queue(agent, "promote", running.instance_id)
    agent.state.begin({"id": cid, "command_type": "promote"}, "t")
    agent.state.finish(cid, {"command_type": "promote", "success": True, "message": "done earlier"})
    agent.state.acknowledge(cid)
    # WHEN the heartbeat delivers it again
    actions = agent.run_due(T0)
    # THEN it is reported with the stored result, never executed
    assert f"reported {cid}" in actions and f"executed {cid}" not in actions
    assert lines(running.runs) == [] and stored(agent, cid).message == "done earlier"


def test_commands_for_another_instance_are_left_alone(running):
    agent = running()
    other = queue(agent, "promote", "i-0fedcba9876543210")
    agent.run_due(T0)
    # the server does not even lease it to this instance: it waits for the agent on the one it names
    assert lines(running.runs) == [] and stored(agent, other).status.value == "pending"


def test_prepare_shutdown_drains_then_the_agent_stops_speaking_for_this_instance(running):
    agent = running()
    cid = queue(agent, "prepare_shutdown", running.instance_id)
    agent.run_due(T0)
    assert lines(running.runs) == [f"prepare_shutdown {cid}"]
    assert stored(agent, cid).status.value == "completed" and agent.retired
    # no heartbeat or price report afterwards (they would point the agent back at this instance)
    before = len(agent.api.session.calls)
    assert agent.run_due(T0 + timedelta(seconds=300)) == []
    assert len(agent.api.session.calls) == before
    # a restart does not register again either
    restarted = running()
    assert restarted.api.session.count("POST", "/api/agents/register") == 0
    # and the final heartbeat is not "offline" (the agent lives on, on its new instance)
    assert restarted.shutdown() is False


def test_a_failing_hook_fails_the_command_with_its_output(running):
    agent = running(promote_hook="echo 'cannot promote' >&2; exit 3")
    cid = queue(agent, "promote", running.instance_id)
    agent.run_due(T0)
    command = stored(agent, cid)
    assert command.status.value == "failed" and "exited 3" in command.message
    assert "cannot promote" in command.message


def test_a_hook_that_hangs_is_stopped_by_its_timeout(running):
    agent = running(promote_hook="sleep 30", hook_timeout_s=0.5)
    cid = queue(agent, "promote", running.instance_id)
    agent.run_due(T0)
    assert "timed out after 0.5s" in stored(agent, cid).message


def test_health_check_succeeds_and_unknown_types_fail_with_a_reason(running):
    agent = running()
    check = queue(agent, "health_check", running.instance_id)
    cleanup = queue(agent, "cleanup_old_amis", None)
    agent.run_due(T0)
    assert stored(agent, check).status.value == "completed"
    assert stored(agent, cleanup).status.value == "failed"
    assert "not executed by this agent" in stored(agent, cleanup).message
