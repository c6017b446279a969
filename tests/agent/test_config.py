"""Configuration: environment over file, clear errors."""

from __future__ import annotations

import json

import pytest

from spot_agent.config import AgentConfig, ConfigError, load_config

ENV = {"SPOT_OPTIMIZER_SERVER_URL": "https://api.example.com/", "SPOT_OPTIMIZER_CLIENT_TOKEN": "tok"}


def test_environment_alone_with_legacy_names_and_defaults():
    config = load_config(env={**ENV, "LOGICAL_AGENT_ID": "web-1", "SPOT_AGENT_HEARTBEAT_S": "15"})
    assert config.server_url == "https://api.example.com" and config.client_token == "tok"
    assert config.logical_agent_id == "web-1" and config.heartbeat_s == 15.0
    assert (config.pricing_s, config.notice_s, config.rebalance_s, config.jitter) == (3600.0, 5.0, 30.0, 0.1)
    assert config.state_dir == "/var/lib/spot-agent" and config.imds_endpoint == "http://169.254.169.254"
    assert config.ondemand_price is None and config.drain_hook is None


@pytest.mark.parametrize("missing", ["SPOT_OPTIMIZER_CLIENT_TOKEN", "SPOT_OPTIMIZER_SERVER_URL"])
def test_a_missing_token_or_url_names_the_variable(missing):
    env = {k: v for k, v in ENV.items() if k != missing}
    with pytest.raises(ConfigError, match=missing):
        load_config(env=env)
    # ... unless credentials are not needed (``spot-agent status``)
    assert isinstance(load_config(env=env, require_credentials=False), AgentConfig)


def test_json_file_under_environment(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"server_url": "http://file", "client_token": "from-file",
                                "SPOT_AGENT_DRAIN_HOOK": "systemctl stop app", "pricing_s": 60}))
    config = load_config(path, env={"SPOT_OPTIMIZER_CLIENT_TOKEN": "from-env"})
    assert config.server_url == "http://file" and config.client_token == "from-env"
    assert config.drain_hook == "systemctl stop app" and config.pricing_s == 60.0


def test_ini_file_with_or_without_a_section(tmp_path):
    with_section = tmp_path / "a.ini"
    with_section.write_text("[spot-agent]\nserver_url = http://ini\nclient_token = t\nondemand_price = 0.1\n")
    without = tmp_path / "b.ini"
    without.write_text("SPOT_OPTIMIZER_SERVER_URL=http://ini2\nSPOT_OPTIMIZER_CLIENT_TOKEN=t\n")
    assert load_config(with_section, env={}).ondemand_price == 0.1
    assert load_config(without, env={}).server_url == "http://ini2"


@pytest.mark.parametrize("env,match", [
    ({"SPOT_AGENT_HEARTBEAT_S": "soon"}, "heartbeat_s must be a number"),
    ({"SPOT_AGENT_NOTICE_S": "0"}, "notice_s must be positive"),
    ({"SPOT_AGENT_JITTER": "0.9"}, "jitter must be between"),
    ({"SPOT_OPTIMIZER_SERVER_URL": "api.example.com"}, "http"),
])
def test_malformed_values_are_refused(env, match):
    with pytest.raises(ConfigError, match=match):
        load_config(env={**ENV, **env})


def test_unknown_keys_and_unreadable_files_are_errors(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"server_ulr": "typo"}))
    with pytest.raises(ConfigError, match="unknown key 'server_ulr'"):
        load_config(bad, env=ENV)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.json", env=ENV)
    broken = tmp_path / "d.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(broken, env=ENV)


def test_instance_types_are_a_checked_comma_list():
    env = ENV
    config = load_config(env={**env, "SPOT_AGENT_INSTANCE_TYPES": " m5a.large, m6i.large ,"})
    assert config.declared_types == ["m5a.large", "m6i.large"]
    assert load_config(env=env).declared_types == []
    with pytest.raises(ConfigError):
        load_config(env={**env, "SPOT_AGENT_INSTANCE_TYPES": "m5a.large,M5 LARGE"})


def test_the_servers_health_thresholds_fit_the_default_cadence():
    """The health monitor must not flap an agent that heartbeats on time: degraded only after ≥ 2.5 of the
    longest jittered heartbeat intervals, offline later still, "slow" after more than one interval, and prices
    stale only after more than one (jittered) report interval."""
    from components.sentinel import HealthThresholds

    config, limits = AgentConfig(), HealthThresholds()
    longest = config.heartbeat_s * (1 + config.jitter)
    assert limits.degraded_after_s >= 2.5 * longest
    assert limits.offline_after_s > limits.degraded_after_s
    assert limits.slow_heartbeat_s > longest
    assert limits.pricing_stale_s > config.pricing_s * (1 + config.jitter)
