"""Command lifecycle with leases, retries and timeouts, plus its storage port."""

from components.command_tracker.errors import (
    CommandConflictError,
    CommandError,
    CommandNotFoundError,
    IllegalTransitionError,
    InvalidCommandError,
    LeaseExpiredError,
)
from components.command_tracker.lifecycle import (
    TIMED_OUT_MESSAGE,
    cancel,
    expire,
    is_lease_expired,
    lease,
    new_command,
    queue_key,
    record_result,
    sort_queue,
    transition,
)
from components.command_tracker.model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    LEGAL_TRANSITIONS,
    Command,
    CommandPriority,
    CommandStatus,
    CommandType,
    LeasePolicy,
    ResultOutcome,
)
from components.command_tracker.ports import CommandStore
from components.command_tracker.service import deliver, enqueue, report_result, sweep_expired

__all__ = [
    "ACTIVE_STATUSES",
    "FINAL_STATUSES",
    "LEGAL_TRANSITIONS",
    "TIMED_OUT_MESSAGE",
    "Command",
    "CommandConflictError",
    "CommandError",
    "CommandNotFoundError",
    "CommandPriority",
    "CommandStatus",
    "CommandStore",
    "CommandType",
    "IllegalTransitionError",
    "InvalidCommandError",
    "LeaseExpiredError",
    "LeasePolicy",
    "ResultOutcome",
    "cancel",
    "deliver",
    "enqueue",
    "expire",
    "is_lease_expired",
    "lease",
    "new_command",
    "queue_key",
    "record_result",
    "report_result",
    "sort_queue",
    "sweep_expired",
    "transition",
]
