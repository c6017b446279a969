"""The command queue as the handlers use it: the component's use cases over the DynamoDB store,
plus the one reaction every path shares — a command that runs out of attempts notifies its client.

Delivery (heartbeat, pending-commands), results (executed) and the health monitor's sweep can each be
the one that moves a command to ``timed_out``; all three go through here, so the client is told once,
whichever path it was.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from components.command_tracker import (
    Command,
    CommandStatus,
    CommandType,
    ResultOutcome,
    deliver,
    new_command,
    report_result,
    sweep_expired,
)

from chalicelib import bootstrap
from chalicelib.repositories import activity


class _TimeoutWatch:
    """The command store, noting each command a use case moves to ``timed_out``."""

    def __init__(self, store) -> None:
        self._store, self.timed_out = store, []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def replace(self, before: Command, after: Command) -> None:
        self._store.replace(before, after)
        if after.status is CommandStatus.TIMED_OUT:
            self.timed_out.append(after)

    def notify(self, now: datetime) -> None:
        for cmd in self.timed_out:
            activity.notify(cmd.client_id, "command_timed_out",
                            f"command {cmd.command_id} ({cmd.command_type.value}) got no result after "
                            f"{cmd.attempts} attempts", now, severity="warning", agent_id=cmd.agent_id)


def deliver_to(agent_id: str, now: datetime) -> list[Command]:
    """Lease the agent's due commands (highest priority first)."""
    watch = _TimeoutWatch(bootstrap.command_store())
    try:
        return deliver(watch, agent_id, now=now, policy=bootstrap.lease_policy())
    finally:
        watch.notify(now)


def record_result(agent_id: str, command_id: str, *, success: bool, message: str | None,
                  now: datetime) -> ResultOutcome:
    """Accept an agent's result for a leased command (idempotent; LeaseExpiredError when late)."""
    watch = _TimeoutWatch(bootstrap.command_store())
    try:
        return report_result(watch, agent_id, command_id, success=success, message=message, now=now)
    finally:
        watch.notify(now)


def sweep(now: datetime) -> dict[str, int]:
    """Expire every lease past its deadline: retried, or timed out and notified."""
    store = bootstrap.command_store()
    watch = _TimeoutWatch(store)
    try:
        changed = sweep_expired(watch, list(store.expired_leases(now)), now=now)
    finally:
        watch.notify(now)
    return {"requeued": len(changed) - len(watch.timed_out), "timed_out": len(watch.timed_out)}


def new_command_id(now: datetime) -> str:
    """Command ids start with their creation time, so an agent's commands sort by age."""
    return f"cmd-{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}"


def switch_command(agent, *, target_mode: str, target_pool_id: str | None, priority: int, trigger: str,
                   created_by: str, now: datetime, command_id: str | None = None) -> Command:
    """A switch command for an agent's current instance (validated by the component, not stored).

    The old instance is terminated after the agent's wait only under auto-terminate (legacy §9.2 #3:
    otherwise the wait is 0 and the agent keeps it).
    """
    config = agent.config
    wait = int(config.get("terminate_wait_seconds", 0)) if config.get("auto_terminate_enabled") else 0
    return new_command(
        command_id=command_id or new_command_id(now), client_id=agent.client_id, agent_id=agent.agent_id,
        command_type=CommandType.SWITCH_TO_ONDEMAND if target_mode == "ondemand" else CommandType.SWITCH,
        priority=priority, now=now, target_mode=target_mode,
        target_pool_id=None if target_mode == "ondemand" else target_pool_id,
        instance_id=agent.instance_id, terminate_wait_seconds=wait, trigger=trigger, created_by=created_by,
        policy=bootstrap.lease_policy())
