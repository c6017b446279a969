"""``spot-agent``: run the daemon, install/uninstall its systemd unit, show its state.

    spot-agent run [--config F] [--log-level L]
    spot-agent install [--config F] [--config-dir /etc/spot-agent] [--unit-dir /etc/systemd/system] [--no-enable]
    spot-agent uninstall [--config-dir D] [--unit-dir D] [--no-enable] [--purge]
    spot-agent status [--config F]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
from pathlib import Path

from spot_agent import __version__
from spot_agent.config import ConfigError, load_config
from spot_agent.systemd import UNIT_NAME, render_unit, systemctl


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spot-agent", description="Spot Optimizer on-instance agent.")
    parser.add_argument("--version", action="version", version=f"spot-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent in the foreground (what the systemd unit starts)")
    run.add_argument("--config", help="JSON or INI config file (environment variables override it)")
    run.add_argument("--log-level", default=os.environ.get("SPOT_AGENT_LOG_LEVEL", "INFO"))

    for name, text in (("install", "write the config and the systemd unit, then enable and start it"),
                       ("uninstall", "stop and disable the unit and remove it")):
        p = sub.add_parser(name, help=text)
        if name == "install":
            p.add_argument("--config", help="config file to install (default: from the environment)")
        p.add_argument("--config-dir", default="/etc/spot-agent",
                       help="where config.json and the optional env file live (default %(default)s)")
        p.add_argument("--unit-dir", default="/etc/systemd/system", help="default %(default)s")
        p.add_argument("--no-enable", action="store_true",
                       help="do not call systemctl (print what to run instead)")
        if name == "uninstall":
            p.add_argument("--purge", action="store_true", help="also delete config.json and the env file")

    status = sub.add_parser("status", help="print the agent's state file")
    status.add_argument("--config")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"run": cmd_run, "install": cmd_install, "uninstall": cmd_uninstall,
                "status": cmd_status}[args.command](args)
    except ConfigError as exc:
        print(f"spot-agent: configuration error: {exc}", file=sys.stderr)
        return 2
    except PermissionError as exc:
        print(f"spot-agent: {exc.strerror}: {exc.filename} (install/uninstall need root)", file=sys.stderr)
        return 1


def cmd_run(args) -> int:
    from spot_agent.agent import Agent, FatalError
    from spot_agent.logs import setup_logging

    config = load_config(args.config)
    setup_logging(args.log_level)
    stop = threading.Event()
    try:
        Agent(config).run_forever(stop)
    except FatalError as exc:
        print(f"spot-agent: {exc}", file=sys.stderr)
        return 3
    return 0


def _systemctl_binary(args) -> str | None:
    return None if args.no_enable else shutil.which("systemctl")


def cmd_install(args) -> int:
    config = load_config(args.config)  # validates: a missing token/URL fails here, not at boot
    config_dir, unit_dir = Path(args.config_dir), Path(args.unit_dir)
    config_path = config_dir / "config.json"
    config_dir.mkdir(parents=True, exist_ok=True)
    # The file holds the client token: readable by root only.
    fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(config.to_file_dict(), fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.chmod(config_path, 0o600)
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path = unit_dir / UNIT_NAME
    unit_path.write_text(render_unit(config_path, config_dir / "env"))
    print(f"wrote {config_path}\nwrote {unit_path}")
    binary = _systemctl_binary(args)
    if args.no_enable:
        print(f"not enabled; run: systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")
        return 0
    if systemctl(["daemon-reload"], binary=binary) and systemctl(["enable", "--now", UNIT_NAME], binary=binary):
        print(f"{UNIT_NAME} enabled and started")
    return 0


def cmd_uninstall(args) -> int:
    unit_path = Path(args.unit_dir) / UNIT_NAME
    binary = _systemctl_binary(args)
    if args.no_enable:
        print(f"not calling systemctl; run: systemctl disable --now {UNIT_NAME}")
    else:
        systemctl(["disable", "--now", UNIT_NAME], binary=binary)
    if unit_path.exists():
        unit_path.unlink()
        print(f"removed {unit_path}")
    else:
        print(f"{unit_path} was not installed")
    if not args.no_enable:
        systemctl(["daemon-reload"], binary=binary)
    if args.purge:
        for name in ("config.json", "env"):
            path = Path(args.config_dir) / name
            if path.exists():
                path.unlink()
                print(f"removed {path}")
    return 0


def cmd_status(args) -> int:
    config = load_config(args.config, require_credentials=False)
    path = config.state_file
    if not path.exists():
        print(f"no state file at {path} (the agent has not run yet)", file=sys.stderr)
        return 1
    print(json.dumps(json.loads(path.read_text()), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
