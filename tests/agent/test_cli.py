"""``spot-agent`` install / uninstall / status / run, with the unit in a temp dir and systemctl faked."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spot_agent import cli

ENV = {"SPOT_OPTIMIZER_SERVER_URL": "https://api.example.com", "SPOT_OPTIMIZER_CLIENT_TOKEN": "secret-token"}
SCRIPT = Path(sys.executable).parent / "spot-agent"


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    return tmp_path / "etc-spot-agent", tmp_path / "units"


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch):
    """A ``systemctl`` on PATH that records its arguments."""
    bindir, log = tmp_path / "bin", tmp_path / "systemctl.log"
    bindir.mkdir()
    exe = bindir / "systemctl"
    exe.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_install_writes_the_unit_and_a_private_config_and_enables_it(dirs, fake_systemctl, capsys):
    config_dir, unit_dir = dirs
    assert cli.main(["install", "--config-dir", str(config_dir), "--unit-dir", str(unit_dir)]) == 0
    unit = (unit_dir / "spot-agent.service").read_text().splitlines()
    # ExecStart: the absolute console script of this environment, running with the written config
    assert f"ExecStart={SCRIPT} run --config {config_dir / 'config.json'}" in unit
    assert Path(SCRIPT).is_absolute() and SCRIPT.exists()
    for line in ("Restart=always", "KillSignal=SIGTERM", "TimeoutStopSec=30", "KillMode=mixed",
                 f"EnvironmentFile=-{config_dir / 'env'}", "WantedBy=multi-user.target"):
        assert line in unit
    config_path = config_dir / "config.json"
    assert json.loads(config_path.read_text())["client_token"] == "secret-token"
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600
    assert fake_systemctl.read_text().splitlines() == ["daemon-reload", "enable --now spot-agent.service"]


def test_install_without_systemctl_or_with_no_enable_prints_what_to_run(dirs, monkeypatch, tmp_path, capsys):
    config_dir, unit_dir = dirs
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert cli.main(["install", "--config-dir", str(config_dir), "--unit-dir", str(unit_dir)]) == 0
    assert "systemctl not found; run: systemctl daemon-reload" in capsys.readouterr().out
    assert cli.main(["install", "--config-dir", str(config_dir), "--unit-dir", str(unit_dir), "--no-enable"]) == 0
    assert "systemctl enable --now spot-agent.service" in capsys.readouterr().out


def test_install_from_a_config_file_refuses_one_without_a_token(dirs, tmp_path, monkeypatch, capsys):
    config_dir, unit_dir = dirs
    monkeypatch.delenv("SPOT_OPTIMIZER_CLIENT_TOKEN")
    source = tmp_path / "given.json"
    source.write_text(json.dumps({"server_url": "https://api.example.com"}))
    assert cli.main(["install", "--config", str(source), "--config-dir", str(config_dir),
                     "--unit-dir", str(unit_dir), "--no-enable"]) == 2
    assert "SPOT_OPTIMIZER_CLIENT_TOKEN must be set" in capsys.readouterr().err
    assert not (unit_dir / "spot-agent.service").exists()


def test_uninstall_stops_disables_and_removes_the_unit(dirs, fake_systemctl):
    config_dir, unit_dir = dirs
    cli.main(["install", "--config-dir", str(config_dir), "--unit-dir", str(unit_dir)])
    fake_systemctl.write_text("")
    assert cli.main(["uninstall", "--config-dir", str(config_dir), "--unit-dir", str(unit_dir)]) == 0
    assert not (unit_dir / "spot-agent.service").exists()
    assert fake_systemctl.read_text().splitlines() == ["disable --now spot-agent.service", "daemon-reload"]
    assert (config_dir / "config.json").exists()  # kept unless --purge
    assert cli.main(["uninstall", "--config-dir", str(config_dir), "--unit-dir", str(unit_dir),
                     "--no-enable", "--purge"]) == 0
    assert not (config_dir / "config.json").exists()


def test_status_prints_the_state_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPOT_AGENT_STATE_DIR", str(tmp_path))
    assert cli.main(["status"]) == 1
    (tmp_path / "state.json").write_text(json.dumps({"agent_id": "ag-1", "unacked": {}}))
    assert cli.main(["status"]) == 0
    assert json.loads(capsys.readouterr().out)["agent_id"] == "ag-1"


def test_the_console_script_is_installed_and_run_without_a_token_fails_clearly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPOT_", "AWS_"))}
    assert subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True,
                          check=True).stdout.strip() == "spot-agent 5.0.0"
    done = subprocess.run([str(SCRIPT), "run"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "SPOT_OPTIMIZER_SERVER_URL and SPOT_OPTIMIZER_CLIENT_TOKEN must be set" in done.stderr
