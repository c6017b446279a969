"""Who an agent is: a stable id per (client, logical id), and what registering does.

The id is derived, not minted, so a retried or repeated registration can
never create a second agent for the same (client, logical id).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace

from components.agent_identity.errors import InvalidLogicalAgentIdError, InvalidRegistrationError
from components.agent_identity.model import (
    AgentStatus,
    InstanceMode,
    KnownAgent,
    Registration,
    RegistrationAction,
    RegistrationPlan,
)
from components.errors import InvalidPoolIdError
from components.pool_id import make_pool_id, region_of_az

__all__ = [
    "agent_id_for",
    "normalize_logical_agent_id",
    "normalize_mode",
    "plan_registration",
    "registration_refusal",
    "validate_registration",
]

_LOGICAL_ID = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
_ONDEMAND_ALIASES = frozenset({"ondemand", "on-demand", "on_demand", "normal"})
_GONE = frozenset({AgentStatus.DELETED, AgentStatus.TERMINATED})


def agent_id_for(client_id: str, logical_agent_id: str) -> str:
    """Deterministic agent id for a (client, logical id) pair.

    The NUL separator keeps ("ab", "c") and ("a", "bc") apart.

    Examples
    --------
    >>> agent_id_for("client-1", "web-1") == agent_id_for("client-1", "web-1")
    True
    >>> agent_id_for("client-1", "web-1").startswith("ag-"), len(agent_id_for("c", "w"))
    (True, 27)
    """
    digest = hashlib.sha256(f"{client_id}\x00{logical_agent_id}".encode()).hexdigest()
    return "ag-" + digest[:24]


def normalize_logical_agent_id(value: object) -> str:
    """Strip and check a logical agent id (1–128 of ``A-Z a-z 0-9 . _ : @ / -``).

    Raises
    ------
    InvalidLogicalAgentIdError
        With ``field="logical_agent_id"``.

    Examples
    --------
    >>> normalize_logical_agent_id("  i-0abc/web@prod ")
    'i-0abc/web@prod'
    """
    if not isinstance(value, str):
        raise InvalidLogicalAgentIdError("must be a string")
    stripped = value.strip()
    if not _LOGICAL_ID.fullmatch(stripped):
        raise InvalidLogicalAgentIdError("must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -")
    return stripped


def normalize_mode(value: str | None) -> InstanceMode:
    """Map whatever mode an agent reports onto `InstanceMode` (missing → UNKNOWN).

    Old agents omit the mode or say "normal"; that must not reject them.

    Examples
    --------
    >>> normalize_mode("On-Demand"), normalize_mode(None), normalize_mode("SPOT")
    (<InstanceMode.ONDEMAND: 'ondemand'>, <InstanceMode.UNKNOWN: 'unknown'>, <InstanceMode.SPOT: 'spot'>)
    """
    if value is None:
        return InstanceMode.UNKNOWN
    text = str(getattr(value, "value", value)).strip().lower()
    if text == "spot":
        return InstanceMode.SPOT
    if text in _ONDEMAND_ALIASES:
        return InstanceMode.ONDEMAND
    return InstanceMode.UNKNOWN


def validate_registration(reg: Registration) -> Registration:
    """Check required fields, that the pool id can be built, and that the AZ
    lies in the stated region.

    Returns the registration with its logical id normalized.
    """
    for field in ("client_id", "instance_id", "instance_type", "region", "az"):
        value = getattr(reg, field)
        if not isinstance(value, str) or not value.strip():
            raise InvalidRegistrationError("must be a non-empty string", field)
    logical = normalize_logical_agent_id(reg.logical_agent_id)
    try:
        make_pool_id(reg.instance_type, reg.az)
        region = region_of_az(reg.az)
    except InvalidPoolIdError as exc:
        raise InvalidRegistrationError(exc.message, exc.field) from exc
    if region != reg.region:
        raise InvalidRegistrationError(f"az {reg.az} is not in region {reg.region}", "az")
    if logical == reg.logical_agent_id:
        return reg
    return replace(reg, logical_agent_id=logical)


def plan_registration(known: KnownAgent | None, reg: Registration) -> RegistrationPlan:
    """Decide what a registration does, given the agent stored for (client, logical id).

    The lookup must ignore status: a deleted or terminated agent that comes
    back is revived under the same id (as the legacy server did). A disabled agent stays
    disabled; registering must not undo an operator's decision.

    Examples
    --------
    >>> reg = Registration("c1", "web-1", "i-new", "m5.large", "us-east-1", "us-east-1a")
    >>> plan_registration(None, reg).action
    <RegistrationAction.CREATED: 'created'>
    >>> old = KnownAgent(agent_id_for("c1", "web-1"), AgentStatus.ONLINE, "i-old", 2)
    >>> plan = plan_registration(old, reg)
    >>> plan.action.value, plan.previous_instance_id, plan.instance_count
    ('migrated', 'i-old', 3)
    """
    reg = validate_registration(reg)
    if known is None:
        return RegistrationPlan(
            agent_id=agent_id_for(reg.client_id, reg.logical_agent_id),
            action=RegistrationAction.CREATED,
            previous_instance_id=None,
            reset_config=True,
            instance_count=1,
            status=AgentStatus.ONLINE,
        )
    moved = known.instance_id is not None and known.instance_id != reg.instance_id
    count = max(known.instance_count, 1) + (1 if moved else 0)
    previous = known.instance_id if moved else None
    if known.status in _GONE:
        action, reset = RegistrationAction.REVIVED, True
    elif moved:
        action, reset = RegistrationAction.MIGRATED, False
    else:
        action, reset = RegistrationAction.REFRESHED, False
    status = AgentStatus.DISABLED if known.status is AgentStatus.DISABLED else AgentStatus.ONLINE
    return RegistrationPlan(
        agent_id=known.agent_id,
        action=action,
        previous_instance_id=previous,
        reset_config=reset,
        instance_count=count,
        status=status,
    )


def registration_refusal(agent_id: str, *, instance_agent_id: str | None, instance_active: bool | None,
                         instance_role: str | None, left_by_switch: bool = False) -> tuple[str, str] | None:
    """Why an instance this agent already knows must not become its instance again: ``(code, message)``
    or None.

    A replaced (or terminated) instance is done: an agent restarting there after a failover or a switch
    would otherwise point the logical agent back at a machine that is about to disappear. A standby is
    not the agent's instance until a failover promotes it; its agent registers after that. An instance the
    agent switched away from (``left_by_switch``) but that is kept running (auto-terminate off) is replaced too.

    Examples
    --------
    >>> registration_refusal("ag-1", instance_agent_id="ag-1", instance_active=False, instance_role="primary")[0]
    'instance_replaced'
    >>> registration_refusal("ag-1", instance_agent_id="ag-1", instance_active=True, instance_role="standby")[0]
    'instance_is_standby'
    >>> registration_refusal("ag-1", instance_agent_id="ag-2", instance_active=False, instance_role="primary")
    >>> registration_refusal("ag-1", instance_agent_id="ag-1", instance_active=True, instance_role="primary",
    ...                      left_by_switch=True)[0]
    'instance_replaced'
    """
    if instance_agent_id != agent_id:
        return None
    if instance_active is False or left_by_switch:
        return "instance_replaced", "this instance was replaced or terminated; its agent must not register it again"
    if instance_role == "standby":
        return "instance_is_standby", "this instance is a standby; its agent registers once a failover promotes it"
    return None
