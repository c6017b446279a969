"""``make serve``: the API on :8000 backed by an embedded AWS on :5000, until Ctrl-C.

    python -m localmode.server [--api-port 8000] [--aws-port 5000]

The admin key comes from SPOT_OPTIMIZER_ADMIN_KEY (generated and printed when unset). Three processes:
this one runs every ``@app.schedule`` job on its schedule; the embedded AWS (moto, its own process)
runs the failover state machine for real and sends its Lambda tasks to ``chalice local``
(``POST /_local/lambda/{name}``), which serves the API; ``POST /_local/eventbridge`` delivers EC2
events to the sentinel as EventBridge would.
SPOT_LOCAL_CLOCK_SPEED=N runs schedules, Wait states and retry back-off N times faster.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from localmode import embedded_aws

ROOT = Path(__file__).resolve().parent.parent


class LocalStack:
    """Embedded AWS + ``chalice local`` + the scheduled jobs, started and stopped together."""

    def __init__(self, api_port: int, aws_port: int, admin_key: str | None = None,
                 run_jobs: bool = True, quiet: bool = False):
        self.api_port, self.aws_port = api_port, aws_port
        self.admin_key_given, self.run_jobs, self.quiet = admin_key, run_jobs, quiet
        self.aws = None
        self.api: subprocess.Popen | None = None
        self.admin_key = ""
        self._stop = threading.Event()
        self._jobs: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> "LocalStack":
        try:
            return self._start()
        except BaseException:
            self.stop()  # the child processes must not outlive a failed start
            raise

    def _start(self) -> "LocalStack":
        from localmode.workflows import ensure_failover_state_machine

        speed = float(os.environ.get("SPOT_LOCAL_CLOCK_SPEED", "1"))
        self.aws, self.admin_key = embedded_aws.start(self.aws_port, self.admin_key_given, api_url=self.api_url,
                                                      clock_speed=speed, quiet=self.quiet)
        ensure_failover_state_machine("local")  # exports FAILOVER_STATE_MACHINE_ARN to chalice local
        out = subprocess.DEVNULL if self.quiet else None
        self.api = subprocess.Popen(  # chalice local, with a listen backlog fit for load (localmode/chalice_local.py)
            [sys.executable, "-m", "localmode.chalice_local", "local", "--stage", "local", "--host", "127.0.0.1",
             "--port", str(self.api_port), "--no-autoreload"],
            cwd=ROOT, env=os.environ.copy(), stdout=out, stderr=out)
        embedded_aws.wait_until_serving(self.api, f"{self.api_url}/health", "chalice local")
        if self.run_jobs:
            self._jobs = threading.Thread(target=self._run_jobs, name="scheduled-jobs", daemon=True)
            self._jobs.start()
        return self

    def _run_jobs(self) -> None:
        from localmode.schedules import run_due_jobs

        speed = float(os.environ.get("SPOT_LOCAL_CLOCK_SPEED", "1"))
        last: dict[str, float] = {}
        while not self._stop.wait(1.0 / max(speed, 1.0)):
            try:
                run_due_jobs(last, speed, datetime.now(timezone.utc))
            except Exception:  # noqa: BLE001 - one failing job must not stop the schedules; say why
                import traceback

                traceback.print_exc()

    def stop_jobs(self, timeout: float = 120) -> None:
        """Stop running the scheduled jobs (waits for one in progress, so none runs against a stopped AWS)."""
        self._stop.set()
        if self._jobs is not None and self._jobs is not threading.current_thread():
            self._jobs.join(timeout)

    def stop(self) -> None:
        self.stop_jobs()
        if self.api and self.api.poll() is None:
            self.api.terminate()
            try:
                self.api.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.api.kill()
        if self.aws:
            self.aws.stop()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--api-port", type=int, default=8000)
    parser.add_argument("--aws-port", type=int, default=5000)
    args = parser.parse_args(argv)
    stack = LocalStack(args.api_port, args.aws_port, os.environ.get("SPOT_OPTIMIZER_ADMIN_KEY"))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        stack.start()
        generated = "" if os.environ.get("SPOT_OPTIMIZER_ADMIN_KEY") else "  (generated)"
        print(f"\nSpot Optimizer local mode\n  API          {stack.api_url}\n"
              f"  embedded AWS {stack.aws.endpoint}  (aws --endpoint-url {stack.aws.endpoint} ...)\n"
              f"  admin key    {stack.admin_key}{generated}\nCtrl-C to stop.\n", flush=True)
        while not stopping.wait(0.5):
            if stack.api.poll() is not None:
                print("chalice local exited", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()
        print("local mode stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
