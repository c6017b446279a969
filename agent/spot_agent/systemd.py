"""The systemd unit: written by ``spot-agent install``, removed by ``spot-agent uninstall``.

systemd, not a self-daemonising process: it restarts the agent after a crash (the state file makes
that safe), sends SIGTERM on stop (the agent answers with its final offline heartbeat), and keeps
the JSON log lines in the journal.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

UNIT_NAME = "spot-agent.service"

UNIT_TEMPLATE = """\
[Unit]
Description=Spot Optimizer agent (heartbeats, price reports, spot notices, commands)
Documentation=https://github.com/spot-optimizer/spot-optimizer/tree/main/agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
# Optional KEY=VALUE overrides (the leading '-' means: only if the file exists).
EnvironmentFile=-{env_file}
ExecStart={exec_start}
Restart=always
RestartSec=5
# Exit 2 is a configuration error (missing token/URL): restarting cannot fix it.
RestartPreventExitStatus=2
KillSignal=SIGTERM
# SIGTERM to the agent only: a drain hook it is running finishes (within its timeout) before the
# agent sends its offline heartbeat; anything left after TimeoutStopSec is killed.
KillMode=mixed
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def agent_command() -> list[str]:
    """Absolute command that starts the agent: the console script next to this interpreter, the
    one on PATH, or (an install without scripts) this interpreter with ``-m spot_agent``."""
    beside = Path(sys.executable).parent / "spot-agent"
    if beside.is_file():
        return [str(beside.absolute())]
    found = shutil.which("spot-agent")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "spot_agent"]


def render_unit(config_path: Path, env_file: Path, command: list[str] | None = None) -> str:
    exec_start = shlex.join([*(command or agent_command()), "run", "--config", str(config_path)])
    return UNIT_TEMPLATE.format(exec_start=exec_start, env_file=env_file)


Runner = Callable[[list[str]], int]


def _run(argv: list[str]) -> int:
    return subprocess.run(argv, check=False).returncode


def systemctl(args: list[str], *, binary: str | None, run: Runner = _run, out=print) -> bool:
    """Run ``systemctl <args>``; without systemctl, print what the operator should run."""
    if not binary:
        out("systemctl not found; run: systemctl " + " ".join(args))
        return False
    code = run([binary, *args])
    if code != 0:
        out(f"systemctl {' '.join(args)} exited {code}")
    return code == 0
