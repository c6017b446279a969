"""Switch records: one per (agent, new instance), written idempotently."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from components.agent_identity import AgentStatus

from chalicelib.errors import ConflictError, NotFoundError, TooManyRequestsError
from chalicelib.repositories.dynamo import cancellation_codes, condition_failed, transaction_connection
from chalicelib.repositories.paging import Page, decode_token, read_page
from chalicelib.settings import get_settings
from chalicelib.tables.agents import AgentTable
from chalicelib.tables.instances import InstanceTable
from chalicelib.tables.switches import SwitchTable


class SwitchLimitExceeded(TooManyRequestsError):
    """The agent recorded its day's switches (``QUOTA_MAX_SWITCHES_PER_AGENT_PER_DAY``): 429 until the next UTC day,
    nothing written."""

    def __init__(self, cap: int, now: datetime, field: str = "new_instance.instance_id") -> None:
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        super().__init__(f"this agent recorded {cap} switches today, its daily bound; a new switch is refused until "
                         f"00:00 UTC", retry_after=max(1, int((midnight - now).total_seconds())),
                         code="switch_limit_exceeded", field=field)


def _day(now: datetime) -> str:
    return now.strftime("%Y-%m-%d")


def today_count(client_id: str, agent_id: str, now: datetime) -> int:
    """The switches the agent recorded today (UTC), as its row counts them (consistent read)."""
    return _today_count(client_id, agent_id, now)[1]


def _today_count(client_id: str, agent_id: str, now: datetime) -> tuple[str | None, int]:
    """The agent row's switch day as stored and the switches it recorded today (consistent read)."""
    try:
        agent = AgentTable.get(client_id, agent_id, consistent_read=True,
                               attributes_to_get=["agent_id", "switch_day", "switch_day_count"])
    except AgentTable.DoesNotExist:
        raise NotFoundError("agent not found", field="agent_id") from None
    return agent.switch_day, int(agent.switch_day_count or 0) if agent.switch_day == _day(now) else 0


def switch_key(initiated_at: datetime, switch_id: str) -> str:
    """Sort key ordering a client's switches in time."""
    return f"{initiated_at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{switch_id}"


def _of_instance(instance_id: str):
    return (SwitchTable.old_instance_id == instance_id) | (SwitchTable.new_instance_id == instance_id)


def page_for_client(client_id: str, limit: int, next_token: str | None, *, instance_id: str | None = None) -> Page:
    """A client's switches, newest first (only those from or to ``instance_id`` when given)."""
    key = ("client_id", "switch_key")
    start = decode_token(next_token, partition_attr="client_id", partition_value=client_id, key_attrs=key)
    return read_page(SwitchTable, lambda size, at: SwitchTable.query(
        client_id, scan_index_forward=False, page_size=size, last_evaluated_key=at,
        filter_condition=_of_instance(instance_id) if instance_id else None),
        limit=limit, start=start, key_attrs=key)


def for_client_since(client_id: str, since: datetime) -> list[SwitchTable]:
    """A client's switches since a time, oldest first (the charts; bounded by the window)."""
    return list(SwitchTable.query(client_id, SwitchTable.switch_key >= switch_key(since, "")))


def of_instance_since(agent_id: str, instance_id: str, since: datetime) -> list[SwitchTable]:
    """The switches from or to one instance since a time, oldest first: a query of its agent's switches (the
    agents index), so one instance's metrics never read the whole client's month of switches."""
    return list(SwitchTable.by_agent.query(agent_id, SwitchTable.switch_key >= switch_key(since, ""),
                                           filter_condition=_of_instance(instance_id)))


def recent_for_agent(agent_id: str, since: datetime, at_least: int) -> list[SwitchTable]:
    """An agent's switches since a time, or its newest ``at_least`` if those are more; oldest first.

    One query, newest first, read only as far as needed: the decision cycle's switch limits want the
    week, its boot-time estimate the newest few switches however old (an agent that has not moved for a
    week keeps its measured boot)."""
    rows = []
    for row in SwitchTable.by_agent.query(agent_id, scan_index_forward=False):
        if len(rows) >= at_least and row.initiated_at < since:
            break
        rows.append(row)
    return rows[::-1]


def recorded_key(agent_id: str, switch_id: str) -> str | None:
    """The key under which this switch (one per agent and new instance: ``switch_id``) is already stored, if
    it is: a repeated report keeps the first one's key whatever time it gives, or none (the receive time)."""
    for row in SwitchTable.by_agent.query(agent_id, scan_index_forward=False,
                                          filter_condition=SwitchTable.switch_id == switch_id):
        return row.switch_key
    return None


def stored(client_id: str, switch_key: str) -> SwitchTable | None:
    """The switch stored under ``switch_key`` (consistent read), or None."""
    try:
        return SwitchTable.get(client_id, switch_key, consistent_read=True)
    except SwitchTable.DoesNotExist:
        return None


_GONE = (AgentStatus.DELETED.value, AgentStatus.TERMINATED.value)  # an agent that no longer runs


def record(row: SwitchTable, *, agent_client_id: str, agent_id: str, new_instance,
           deactivate_old: str | None, now: datetime, daily_cap: int | None = None,
           commanded: bool | Callable[[], bool] = False) -> bool:
    """Store a switch and move the agent to its new instance in one transaction.

    The row expires ``EVENT_RETENTION_DAYS`` after ``now``. With ``daily_cap`` (a switch its agent reports; None
    for a repeat, whose key is already stored), the agent row counts the switches of the UTC day in the same
    transaction, conditional on the count read: past the cap SwitchLimitExceeded (429), nothing written — unless
    ``commanded``: the switch ran a switch command the service delivered (it happened on the service's word, and a
    refused report is never sent again by a legacy agent: the switch would go unrecorded); it is counted all the same.
    A callable ``commanded`` is asked only past the cap, after the count is read: the count is the write's condition,
    so a switch it lets past is the first since that read (two reports of one command racing record one past the cap:
    security walk 22).

    Returns False (and changes nothing) when this switch was already recorded: agents retry reports. The
    caller keys a repeat like the first (``recorded_key``); the agent's ``last_switch_id`` also refuses a
    repeat keyed otherwise that races the first or reads the index before it shows the first.
    ``new_instance`` is the InstanceTable row to upsert (only if new or already this client's).
    An agent deleted since the report read it is 404 with nothing written: the report must not leave an active
    instance row (nor the agent moved) under a deleted agent, which its delete closed.
    """
    row.expires_at = now + timedelta(days=get_settings().event_retention_days)
    agent_actions = [AgentTable.instance_id.set(row.new_instance_id), AgentTable.last_switch_at.set(now),
                     AgentTable.last_switch_id.set(row.switch_id), AgentTable.updated_at.set(now)]
    agent_condition = (AgentTable.agent_id.exists() & ~AgentTable.status.is_in(*_GONE)
                       & (AgentTable.last_switch_id.does_not_exist() | (AgentTable.last_switch_id != row.switch_id)))
    if daily_cap is not None:
        stored_day, today = _today_count(agent_client_id, agent_id, now)
        if today >= daily_cap and not _asked(commanded):
            raise SwitchLimitExceeded(daily_cap, now)
        agent_actions += [AgentTable.switch_day.set(_day(now)), AgentTable.switch_day_count.set(today + 1)]
        agent_condition &= (AgentTable.switch_day.does_not_exist() if stored_day is None
                            else AgentTable.switch_day == stored_day)
        if today:
            agent_condition &= AgentTable.switch_day_count == today
    for attribute, value in ((AgentTable.instance_type, row.new_instance_type),
                             (AgentTable.az, row.new_az), (AgentTable.current_mode, row.new_mode),
                             (AgentTable.current_pool_id, row.new_pool_id)):
        if value:
            agent_actions.append(attribute.set(value))
    try:
        with TransactWrite(connection=transaction_connection()) as tx:
            tx.save(row, condition=SwitchTable.switch_key.does_not_exist())
            tx.save(new_instance, condition=InstanceTable.instance_id.does_not_exist()
                    | (InstanceTable.client_id == agent_client_id))
            tx.update(AgentTable(agent_client_id, agent_id), actions=agent_actions, condition=agent_condition)
            if deactivate_old and deactivate_old != row.new_instance_id:
                tx.update(InstanceTable(deactivate_old),
                          actions=[*InstanceTable.close_actions(),
                                   InstanceTable.terminated_at.set(row.old_terminated_at or now),
                                   InstanceTable.updated_at.set(now)],
                          condition=InstanceTable.client_id == agent_client_id)
    except TransactWriteError as exc:
        codes = cancellation_codes(exc)
        if codes and codes[0] == "ConditionalCheckFailed":
            if deactivate_old and deactivate_old != row.new_instance_id and row.old_terminated_at:
                _old_terminated(row, agent_client_id, deactivate_old, now)
            return False
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            raise ConflictError("new_instance.instance_id belongs to another client",
                                field="new_instance.instance_id", code="instance_conflict") from exc
        if len(codes) > 2 and codes[2] == "ConditionalCheckFailed":
            try:
                agent = AgentTable.get(agent_client_id, agent_id, consistent_read=True)
            except AgentTable.DoesNotExist:
                raise NotFoundError("agent not found", field="agent_id") from exc
            if agent.last_switch_id == row.switch_id:
                return False
            if agent.status in _GONE:
                raise NotFoundError("agent not found", field="agent_id") from exc
            if (daily_cap is not None and _today_count(agent_client_id, agent_id, now)[1] >= daily_cap
                    and not _asked(commanded)):
                raise SwitchLimitExceeded(daily_cap, now) from exc
        raise
    return True


def _asked(commanded: bool | Callable[[], bool]) -> bool:
    return commanded() if callable(commanded) else commanded


def supersede_inferred(row: SwitchTable, *, client_id: str, deactivate_old: str | None, now: datetime) -> bool:
    """The agent's own report of a switch recorded without one (``inferred``: from the replacement's
    registration) replaces that record, once: its prices, timings and snapshot are the better evidence. Under
    auto-terminate its termination time becomes the old instance's (the registration closed it at its own
    time). False when the stored switch is a reported one (a plain repeat)."""
    row.inferred = None
    row.expires_at = now + timedelta(days=get_settings().event_retention_days)
    try:
        row.save(condition=SwitchTable.inferred == True)  # noqa: E712
    except PutError as exc:
        if condition_failed(exc):
            return False
        raise
    if deactivate_old and deactivate_old != row.new_instance_id and row.old_terminated_at:
        try:
            InstanceTable(deactivate_old).update(
                actions=[*InstanceTable.close_actions(), InstanceTable.terminated_at.set(row.old_terminated_at),
                         InstanceTable.updated_at.set(now)],
                condition=InstanceTable.client_id == client_id)
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
    return True


def _old_terminated(row: SwitchTable, client_id: str, old_instance_id: str, now: datetime) -> None:
    """A repeated report that now carries the old instance's termination (the agent terminates it after
    the wait and reports again): record the time and deactivate the old instance, once."""
    try:
        _write_old_terminated(row, client_id, old_instance_id, now)
    except TransactWriteError:
        pass  # already recorded by an earlier repeat


def record_old_termination(client_id: str, switch_key: str, *, old_instance_id: str, terminated_at: datetime,
                           deactivate: bool, now: datetime) -> bool:
    """The repeated report of a switch already recorded from ``old_instance_id`` (a retired credential's):
    what ``record``'s duplicate path does — under auto-terminate the termination time is recorded and the old
    instance closed, once. True when the switch exists and names that old instance."""
    try:
        row = SwitchTable.get(client_id, switch_key, consistent_read=True)
    except SwitchTable.DoesNotExist:
        return False
    if row.old_instance_id != old_instance_id:
        return False
    if deactivate and row.old_terminated_at is None:
        row.old_terminated_at = terminated_at
        _old_terminated(row, client_id, old_instance_id, now)
    return True


def _write_old_terminated(row: SwitchTable, client_id: str, old_instance_id: str, now: datetime) -> None:
    with TransactWrite(connection=transaction_connection()) as tx:
        tx.update(InstanceTable(old_instance_id),
                  actions=[*InstanceTable.close_actions(), InstanceTable.terminated_at.set(row.old_terminated_at),
                           InstanceTable.updated_at.set(now)],
                  condition=(InstanceTable.client_id == client_id) & InstanceTable.terminated_at.does_not_exist())
        tx.update(SwitchTable(row.client_id, row.switch_key),
                  actions=[SwitchTable.old_terminated_at.set(row.old_terminated_at)],
                  condition=SwitchTable.old_terminated_at.does_not_exist())
