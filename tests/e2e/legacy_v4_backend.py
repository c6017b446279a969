"""A model of the v4 variant ``Agent/agent-backend.py`` of atharva0608/final-ml (commit f40f7ff, "Production Agent
v4.0.0"), on the v4 model's simulated clock (tests/e2e/legacy_v4.py). Its wire format is v4's (same register,
heartbeat, config, pricing, switch and replica bodies, same Bearer token, any non-2xx read as "no answer"); what it
does differently, as its code does it:

- **no retries**: a call that fails is not repeated (v4 retries timeouts and connection errors 3 times);
- **instances to terminate**: its cleanup thread (first after 60 s) polls ``GET instances-to-terminate`` every 60 s
  and, when the answer says ``auto_terminate_enabled`` and lists ``instances``, terminates each listed instance
  itself (after checking it still runs) and posts ``termination-report {instance_id, success, error,
  terminated_at}``; the AMI/snapshot cleanup and its report still run hourly on the same thread;
- **replica termination**: the ``replicas?status=terminated`` poll (every 30 s) does not read ``is_active``: each
  listed row with an ``id`` and an ``instance_id`` that is not a ``manual-``/``replica-`` placeholder, once per
  process, has its instance described and, unless it is ``terminated`` (or "terminating", no EC2 state), terminated;
  then the row is posted ``{status: terminated, is_active: false, terminated_at}``;
- **commands**: besides switches (``{**command, agent_id}``) and ``create_replica`` (not modelled: the product never
  sends it), a ``terminate_replica`` command reads ``replica_id``, ``GET replicas/{replica_id}``, terminates its
  instance, posts the row ``terminated`` and the result (the product never sends that type either);
- **deleted agent**: after 5 failed heartbeats it would ``GET /api/agents/{id}`` and, on a 404, run its uninstall
  script and exit. Unreachable as written (``send_heartbeat`` returns a bool, which the worker compares with None),
  so not modelled.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.legacy_v4 import CLEANUP_S, FakeEc2, Host, Thread, V4Agent, v4_time

VERSION = "4.0.0"
TERMINATION_CHECK_FIRST_S = TERMINATION_POLL_S = 60


class BackendV4Agent(V4Agent):
    """One agent-backend.py process."""

    LABEL = "v4b"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.instances_terminated: list[str] = []  # what its instances-to-terminate poll terminated
        self.replica_instances_terminated: list[str] = []  # what its replica-termination poll terminated

    def _state(self, instance_id: str) -> str | None:
        ec2 = self.fleet.ec2
        if isinstance(ec2, FakeEc2):
            known = {h.instance_id for h in ec2.launched} | {self.host.instance_id}
            return "terminated" if instance_id in ec2.terminated else ("running" if instance_id in known else None)
        try:
            return ec2.describe(instance_id)["State"]["Name"]
        except Exception:  # noqa: BLE001 - InvalidInstanceID.NotFound: gone
            return None

    def _terminate(self, instance_id: str) -> None:
        ec2 = self.fleet.ec2
        if isinstance(ec2, FakeEc2):
            ec2.terminated.append(instance_id)
        else:
            ec2.client.terminate_instances(InstanceIds=[instance_id])
            ec2.terminated.append(instance_id)

    def _cleanup(self) -> Thread:
        """The hourly AMI/snapshot report, and the instances-to-terminate poll every 60 s."""
        last_full = None
        while self.running:
            if last_full is None or self.fleet.sim.elapsed - last_full >= CLEANUP_S:
                yield from self._cleanup_report()
                last_full = self.fleet.sim.elapsed
            answer = self.answer("GET", f"{self.base}/instances-to-terminate")
            if answer and answer.get("auto_terminate_enabled") and answer.get("instances"):
                for listed in answer["instances"]:
                    instance_id = listed.get("instance_id")
                    if not instance_id:
                        continue
                    if self._state(instance_id) not in (None, "terminated", "terminating"):
                        self._terminate(instance_id)
                        self.instances_terminated.append(instance_id)
                    self.answer("POST", f"{self.base}/termination-report", {
                        "instance_id": instance_id, "success": True, "error": None,
                        "terminated_at": v4_time(self.fleet.sim.now)})
            yield TERMINATION_POLL_S

    def _cleanup_report(self) -> Thread:
        now = self.fleet.sim.now
        self.answer("POST", f"{self.base}/cleanup-report", {
            "timestamp": v4_time(now),
            "snapshots": {"type": "snapshots", "deleted": [], "failed": [], "cutoff_date": v4_time(now)},
            "amis": {"type": "amis", "deleted_amis": [], "deleted_snapshots": [], "failed": [],
                     "cutoff_date": v4_time(now)}})
        return
        yield

    def _terminates_listed(self, replica: dict) -> bool:
        """Every listed row, whatever its ``is_active``."""
        return True

    def _terminate_listed(self, rid: str, placed: str) -> None:
        """Its instance is terminated unless EC2 says it is gone already."""
        if self._state(placed) not in (None, "terminated", "terminating"):
            self._terminate(placed)
            self.replica_instances_terminated.append(placed)

    def _runs_other(self, command: dict) -> bool:
        """Its ``terminate_replica`` command (the product never sends one): run at once, the poll's turn ends."""
        if command.get("command_type") != "terminate_replica":
            return False
        self._terminate_replica(command)
        return True

    def _terminate_replica(self, command: dict) -> None:
        rid, message, success = command.get("replica_id"), "Replica termination failed", False
        if rid:
            replica: Any = self.answer("GET", f"{self.base}/replicas/{rid}")
            placed = (replica or {}).get("instance_id")
            success = True
            if placed and placed.startswith("i-"):
                self._terminate(placed)
                self.replica_instances_terminated.append(placed)
                self.answer("POST", f"{self.base}/replicas/{rid}/status", {"status": "terminated"})
            message = f"Replica {rid} terminated"
        self.answer("POST", f"{self.base}/commands/{command['id']}/executed", {"success": success, "message": message})


__all__ = ["BackendV4Agent", "Host", "VERSION"]
