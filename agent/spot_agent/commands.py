"""Executing delivered commands exactly once, across crashes and restarts.

Every command goes through the state file in three steps:

1. ``executing <id>`` is written BEFORE anything runs;
2. ``done <id> + result`` is written when it ends (and queued as "not yet acknowledged");
3. the result is reported (``POST .../commands/<id>/executed``) and, once the server answered,
   acknowledged in the state.

On restart (``recover``):

- a command found *done but not acknowledged* is only re-reported, never run again;
- a command found *executing* means the agent died in the middle of it. It is reported as FAILED
  ("interrupted by an agent restart"), not run again. We chose at-most-once over at-least-once
  because the side effects are not idempotent and we cannot tell how far they got: a drain hook
  may have half-drained, a switch may have launched a replacement (its id is kept in the state's
  phase and named in the failure message so an operator can find it). The server decides what
  happens next (its lease/retry policy and the failover workflow), with a truthful result.

The server re-delivers a command while its lease is held; a re-delivered command this agent has
already finished gets its stored result reported again (the server treats a same-outcome repeat as
a replay), so a lost acknowledgement can never turn into a second execution.

Commands name the instance they are for (the server targets instances: ``prepare_shutdown`` for
the old one, ``promote`` for the new one, both delivered to the same agent id); a command for
another instance id is left alone.
"""

from __future__ import annotations

import logging
import os
import subprocess
from datetime import datetime
from typing import Any, Callable, Protocol

from spot_agent import __version__
from spot_agent.api import ApiClient, ApiError
from spot_agent.state import AgentState
from spot_agent.switch import SWITCH_TYPES, iso

log = logging.getLogger("spot_agent.commands")

INTERRUPTED = "interrupted by an agent restart"
MESSAGE_LIMIT = 1900  # the server accepts 2000 characters


class HookRunner(Protocol):
    def __call__(self, command: str, *, env: dict[str, str], timeout: float) -> tuple[bool, str]: ...


def run_hook(command: str, *, env: dict[str, str], timeout: float) -> tuple[bool, str]:
    """Run an operator hook through the shell; (succeeded, short message with the output's tail)."""
    try:
        done = subprocess.run(command, shell=True, env={**os.environ, **env}, timeout=timeout,
                              capture_output=True, text=True, check=False)
    except subprocess.TimeoutExpired as exc:
        return False, f"hook timed out after {timeout:g}s: {_tail(exc.stdout)}{_tail(exc.stderr)}".strip()
    except OSError as exc:
        return False, f"hook could not start: {exc}"
    output = (_tail(done.stdout) + " " + _tail(done.stderr)).strip()
    return done.returncode == 0, f"hook exited {done.returncode}" + (f": {output}" if output else "")


def _tail(text: Any, limit: int = 600) -> str:
    if not text:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


class CommandExecutor:
    """Runs commands for one agent on one instance, with the state file as its ledger."""

    def __init__(self, *, state: AgentState, api: ApiClient, instance_id: str, config: Any,
                 clock: Callable[[], datetime], switcher_factory: Callable[[], Any],
                 hook_runner: HookRunner = run_hook,
                 logger: logging.Logger | logging.LoggerAdapter = log):
        self.state, self.api, self.instance_id, self.config = state, api, instance_id, config
        self.clock, self.switcher_factory, self.hook_runner = clock, switcher_factory, hook_runner
        self.log = logger
        self._ignored: set[str] = set()

    # ---- restart -----------------------------------------------------------------------------

    def recover(self) -> str | None:
        """A command left ``executing`` by a crash becomes a failed result (never re-run)."""
        current = self.state["current"]
        if not current:
            return None
        cid = current["command_id"]
        detail = f" (replacement {current['new_instance_id']} was launched)" if current.get("new_instance_id") else ""
        self.log.warning("command %s was %s when the agent stopped; reporting it failed, not re-running it",
                         cid, current.get("phase"))
        now = self.clock()
        self.state.finish(cid, {"command_type": current.get("command_type"), "success": False,
                                "message": INTERRUPTED + detail, "finished_at": iso(now),
                                "switch_report": None})
        if current.get("command_type") == "prepare_shutdown":
            self._retire_after_shutdown(cid, now)  # the failover moved on whether the drain finished or not
        return cid

    # ---- delivery ----------------------------------------------------------------------------

    def handle(self, agent_id: str, commands: list[dict[str, Any]], now: datetime) -> list[str]:
        """Execute (or re-report) each delivered command for this instance, in the server's order."""
        done: list[str] = []
        for command in commands:
            if self.state["retired"]:
                break
            cid = command.get("id") or command.get("command_id")
            if not cid:
                continue
            target = command.get("instance_id")
            if target and target != self.instance_id:
                if cid not in self._ignored:
                    self._ignored.add(cid)
                    self.log.info("command %s (%s) is for instance %s, not this one; ignored",
                                  cid, command.get("command_type"), target)
                continue
            command = {**command, "id": cid}
            if self.state.finished(cid) is None:
                self.execute(command, now, agent_id=agent_id)
                done.append(f"executed {cid}")
            if self.report(agent_id, cid):
                done.append(f"reported {cid}")
        return done

    def execute(self, command: dict[str, Any], now: datetime, agent_id: str | None = None) -> dict[str, Any]:
        """Run one command between the two state writes; exceptions become a failed result.

        Only ``Exception`` is caught: a crash (or a test's simulated one) must leave ``executing``
        in the state, which is exactly what ``recover`` handles.
        """
        cid, ctype = command["id"], command.get("command_type") or "switch"
        self.state.begin(command, iso(now))
        self.log.info("executing command %s (%s)", cid, ctype)
        try:
            result = self._run(command, ctype, now, lambda: self._keepalive(agent_id, cid))
        except Exception as exc:  # noqa: BLE001 - reported to the server as the command's failure
            self.log.exception("command %s (%s) failed", cid, ctype)
            result = {"success": False, "message": f"{type(exc).__name__}: {exc}"}
            if code := aws_error_code(exc):
                result["error_code"] = code  # the server records a capacity refusal of the target pool
        result = {"command_type": ctype, "switch_report": None, **result,
                  "message": _tail(result.get("message"), MESSAGE_LIMIT), "finished_at": iso(self.clock())}
        self.state.finish(cid, result)
        self._after(command, ctype, result, now)
        self.log.info("command %s (%s) %s: %s", cid, ctype, "succeeded" if result["success"] else "failed",
                      result["message"])
        return result

    def _keepalive(self, agent_id: str | None, command_id: str) -> None:
        """Renew the command's lease while it runs. Failing to is not fatal: the server records a
        result that arrives after its lease ran out, and never re-delivers a switch elsewhere."""
        if not agent_id:
            return
        try:
            self.api.extend_lease(agent_id, command_id)
        except ApiError as exc:
            self.log.warning("could not renew the lease of %s: %s", command_id, exc)

    def _run(self, command: dict[str, Any], ctype: str, now: datetime,
             keepalive: Callable[[], None] = lambda: None) -> dict[str, Any]:
        if ctype == "prepare_shutdown":
            return self._hook(self.config.drain_hook, command, "drain")
        if ctype == "promote":
            return self._hook(self.config.promote_hook, command, "promote")
        if ctype == "health_check":
            return {"success": True, "message": f"ok: spot-agent {__version__} on {self.instance_id}"}
        if ctype in SWITCH_TYPES:
            switcher = self.switcher_factory()
            return switcher.run(command, keepalive)
        return {"success": False, "message": f"command type {ctype!r} is not executed by this agent "
                                             "(replicas and AMI cleanup are done by the server)"}

    def _hook(self, hook: str | None, command: dict[str, Any], kind: str) -> dict[str, Any]:
        if not hook:
            return {"success": True, "message": f"no {kind} hook configured"}
        env = {"SPOT_COMMAND_ID": str(command["id"]), "SPOT_COMMAND_TYPE": str(command.get("command_type")),
               "SPOT_INSTANCE_ID": self.instance_id}
        ok, message = self.hook_runner(hook, env=env, timeout=self.config.hook_timeout_s)
        return {"success": ok, "message": f"{kind} {message}"}

    def _after(self, command: dict[str, Any], ctype: str, result: dict[str, Any], now: datetime) -> None:
        """State changes a finished command implies for the agent itself."""
        if ctype == "prepare_shutdown":
            self._retire_after_shutdown(command["id"], now)
        elif ctype in SWITCH_TYPES and result["success"]:
            self.state.update(retired={"reason": "switched", "command_id": command["id"], "at": iso(now),
                                       "new_instance_id": result.get("new_instance_id")})
            wait = int(command.get("terminate_wait_seconds") or 0)
            if wait > 0:
                self.state.update(retire_instance={"instance_id": self.instance_id, "command_id": command["id"],
                                                   "at_epoch": now.timestamp() + wait})

    def _retire_after_shutdown(self, command_id: str, now: datetime) -> None:
        # The failover moved the agent to another instance: stop speaking for this one (a heartbeat
        # or a registration from here would point the agent back at it).
        self.state.update(retired={"reason": "prepare_shutdown", "command_id": command_id, "at": iso(now)})

    # ---- reporting ---------------------------------------------------------------------------

    def report(self, agent_id: str, command_id: str) -> bool:
        """Send a finished command's switch report (if any) and result; True once acknowledged.

        A retryable failure (server unreachable, 5xx, 429) keeps the result queued for the next
        cycle. A 4xx answer is final (the command is unknown, or its lease ran out and the server
        re-queued or timed it out): it is logged and dropped from the queue; if the server
        re-delivers the command, the stored result is reported again.
        """
        entry = self.state.finished(command_id)
        if entry is None:
            return False
        if entry.get("switch_report") and not entry.get("switch_reported"):
            try:
                self.api.switch_report(agent_id, entry["switch_report"])
                self.state.update_result(command_id, switch_reported=True)
            except ApiError as exc:
                if exc.retryable:
                    self.log.warning("switch report for %s not delivered (will retry): %s", command_id, exc)
                    return False
                self.log.error("switch report for %s rejected: %s", command_id, exc)
                self.state.update_result(command_id, switch_reported="rejected")
        try:
            reply = self.api.command_executed(agent_id, command_id, success=bool(entry["success"]),
                                              message=entry.get("message"), error_code=entry.get("error_code"))
        except ApiError as exc:
            if exc.retryable:
                self.log.warning("result of %s not delivered (will retry): %s", command_id, exc)
                return False
            self.log.warning("result of %s refused by the server (%s); not retrying", command_id, exc)
            self.state.acknowledge(command_id)
            return False
        self.state.acknowledge(command_id)
        self.log.info("result of %s acknowledged%s", command_id, " (replay)" if reply.get("replay") else "")
        return True

    def report_pending(self, agent_id: str) -> list[str]:
        """Re-send every finished-but-unacknowledged result (start-up, and each cycle)."""
        return [f"reported {cid}" for cid in list(self.state["unacked"]) if self.report(agent_id, cid)]


def aws_error_code(exc: BaseException) -> str | None:
    """botocore's ``ClientError.response["Error"]["Code"]`` (e.g. InsufficientInstanceCapacity), or None."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else None
