"""The agent's local state file: what must survive a restart (systemd ``Restart=always``, a crash,
a reboot) for commands to run at most once and results to be reported at least once.

Written atomically (temp file in the same directory, fsync, ``os.replace``) so a crash mid-write
leaves either the old or the new state, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_VERSION = 1
FINISHED_LIMIT = 200


def _empty() -> dict[str, Any]:
    return {
        "version": STATE_VERSION,
        "agent_id": None,
        # The agent credential of the last verified registration (the file is created 0600).
        "agent_credential": None,
        "instance_id": None,
        "config": {},
        "config_version": None,
        # The command being executed: {"command_id", "command_type", "phase", "started_at", ...}.
        "current": None,
        # Finished commands, oldest first (bounded): {"command_id", "command_type", "success", "message", ...}.
        "finished": [],
        # Results the server has not acknowledged yet, by command id (never dropped by the bound).
        "unacked": {},
        # Notices already reported (their IMDS time), so each is reported once.
        "notices": {"instance_action_time": None, "rebalance_time": None},
        # Set when this instance stopped being the agent's instance (switch done, prepare_shutdown).
        "retired": None,
        # Old instance to terminate after a switch: {"instance_id", "at"}.
        "retire_instance": None,
    }


class AgentState:
    """The state file's content plus the transitions the agent makes on it; every change is saved."""

    def __init__(self, path: str | os.PathLike, data: dict[str, Any] | None = None):
        self.path = Path(path)
        self.data = data if data is not None else _empty()

    # ---- persistence -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike) -> AgentState:
        """The saved state, or a fresh one when there is no file yet."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            return cls(p)
        base = _empty()
        base.update(data if isinstance(data, dict) else {})
        base["notices"] = {**_empty()["notices"], **(base.get("notices") or {})}
        return cls(p, base)

    def save(self) -> None:
        """Atomic replace: a reader (or a crash) never sees half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.data, fh, indent=2, sort_keys=True, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    # ---- identity ----------------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.data.get(key)

    def update(self, **values: Any) -> None:
        self.data.update(values)
        self.save()

    # ---- commands: executing → done → acknowledged ---------------------------------------

    def begin(self, command: dict[str, Any], started_at: str) -> None:
        """Record "executing <id>" BEFORE anything runs (the at-most-once guard)."""
        self.data["current"] = {"command_id": command["id"], "command_type": command.get("command_type"),
                                "phase": "executing", "started_at": started_at}
        self.save()

    def set_phase(self, phase: str, **details: Any) -> None:
        """Progress inside a command (e.g. the replacement a switch launched), for crash diagnosis."""
        if self.data["current"]:
            self.data["current"].update(phase=phase, **details)
            self.save()

    def finish(self, command_id: str, result: dict[str, Any]) -> None:
        """Record "done <id> + result" and queue the result for the server, in one write."""
        entry = {"command_id": command_id, **result}
        self.data["current"] = None
        self.data["finished"] = [f for f in self.data["finished"] if f["command_id"] != command_id]
        self.data["finished"].append(entry)
        del self.data["finished"][:-FINISHED_LIMIT]
        self.data["unacked"][command_id] = entry
        self.save()

    def finished(self, command_id: str) -> dict[str, Any] | None:
        for entry in self.data["finished"]:
            if entry["command_id"] == command_id:
                return entry
        return self.data["unacked"].get(command_id)

    def update_result(self, command_id: str, **values: Any) -> None:
        """Mark progress of a result's reporting (e.g. switch report sent) in both places."""
        for entry in (self.finished(command_id), self.data["unacked"].get(command_id)):
            if entry is not None:
                entry.update(values)
        self.save()

    def acknowledge(self, command_id: str) -> None:
        self.data["unacked"].pop(command_id, None)
        self.save()

    # ---- notices -----------------------------------------------------------------------------

    def notice(self, kind: str) -> str | None:
        return self.data["notices"].get(kind)

    def set_notice(self, kind: str, value: str | None) -> None:
        if self.data["notices"].get(kind) != value:
            self.data["notices"][kind] = value
            self.save()
