"""Agent configuration: environment variables, optionally on top of a JSON or INI file.

The legacy agent read only its environment; the variable names are kept so an
existing ``/etc/spot-agent/env`` keeps working. A file exists for ``spot-agent install``, which
writes one the systemd unit points at. The environment overrides the file, so an operator can
change one value in the unit's EnvironmentFile without editing the file.
"""

from __future__ import annotations

import configparser
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

DEFAULT_CONFIG_PATH = "/etc/spot-agent/config.json"


class ConfigError(ValueError):
    """The configuration cannot run an agent (missing credential, malformed value or file)."""


@dataclass(frozen=True)
class AgentConfig:
    """Everything the daemon needs; cadences are seconds (the legacy agent's timers)."""

    server_url: str = ""
    client_token: str = field(default="", repr=False)  # never in logs or tracebacks
    logical_agent_id: str | None = None  # None: the instance id (legacy fallback)
    region: str | None = None  # None: IMDS placement/region
    state_dir: str = "/var/lib/spot-agent"
    imds_endpoint: str = "http://169.254.169.254"
    # Issue #14's cost target: a heartbeat every 2 min (it also delivers commands; during a termination notice
    # the agent heartbeats every 10 s) and a price report every hour (the server prices every pool of a type
    # an agent runs itself; a report only fills in pools it does not). The server's health thresholds are
    # sized for these (components/sentinel/model.py HealthThresholds).
    heartbeat_s: float = 120.0
    pricing_s: float = 3600.0
    notice_s: float = 5.0
    rebalance_s: float = 30.0
    jitter: float = 0.1
    drain_hook: str | None = None
    promote_hook: str | None = None
    hook_timeout_s: float = 90.0  # a drain must fit in the two-minute notice
    ondemand_price: float | None = None
    price_source: str | None = None  # "module:callable" (recorded prices for replays/tests)
    http_timeout_s: float = 10.0
    instance_types: str | None = None  # comma list: other types the service can run on (sent at registration)

    @property
    def declared_types(self) -> list[str]:
        """``instance_types`` as a list (empty: the server keeps what it has, the own type for a new agent)."""
        return [t.strip() for t in (self.instance_types or "").split(",") if t.strip()]

    @property
    def state_file(self) -> Path:
        return Path(self.state_dir) / "state.json"

    def require_credentials(self) -> AgentConfig:
        """Raise ConfigError unless the server URL and client token are set (the agent cannot run)."""
        missing = [env for env, name in (("SPOT_OPTIMIZER_SERVER_URL", "server_url"),
                                         ("SPOT_OPTIMIZER_CLIENT_TOKEN", "client_token"))
                   if not getattr(self, name)]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} must be set (environment or --config file)")
        if not self.server_url.startswith(("http://", "https://")):
            raise ConfigError(f"SPOT_OPTIMIZER_SERVER_URL must be an http(s) URL, got {self.server_url!r}")
        return self

    def to_file_dict(self) -> dict[str, Any]:
        """The config as ``install`` writes it (field names; unset values left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


# Environment variable → field. The first two names and LOGICAL_AGENT_ID/AWS_REGION are the legacy ones.
ENV_NAMES: dict[str, str] = {
    "SPOT_OPTIMIZER_SERVER_URL": "server_url",
    "SPOT_OPTIMIZER_CLIENT_TOKEN": "client_token",
    "LOGICAL_AGENT_ID": "logical_agent_id",
    "AWS_REGION": "region",
    "SPOT_AGENT_STATE_DIR": "state_dir",
    "SPOT_AGENT_IMDS_ENDPOINT": "imds_endpoint",
    "SPOT_AGENT_HEARTBEAT_S": "heartbeat_s",
    "SPOT_AGENT_PRICING_S": "pricing_s",
    "SPOT_AGENT_NOTICE_S": "notice_s",
    "SPOT_AGENT_REBALANCE_S": "rebalance_s",
    "SPOT_AGENT_JITTER": "jitter",
    "SPOT_AGENT_DRAIN_HOOK": "drain_hook",
    "SPOT_AGENT_PROMOTE_HOOK": "promote_hook",
    "SPOT_AGENT_HOOK_TIMEOUT_S": "hook_timeout_s",
    "SPOT_AGENT_ONDEMAND_PRICE": "ondemand_price",
    "SPOT_AGENT_PRICE_SOURCE": "price_source",
    "SPOT_AGENT_HTTP_TIMEOUT_S": "http_timeout_s",
    "SPOT_AGENT_INSTANCE_TYPES": "instance_types",
}
_FIELDS = {f.name for f in fields(AgentConfig)}
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9-]+")  # the server's shape (components.pool_id)
MAX_INSTANCE_TYPES = 20
_CADENCES = ("heartbeat_s", "pricing_s", "notice_s", "rebalance_s", "hook_timeout_s", "http_timeout_s")


def _field_name(key: str) -> str | None:
    if key in ENV_NAMES:
        return ENV_NAMES[key]
    upper = key.upper()
    if upper in ENV_NAMES:
        return ENV_NAMES[upper]
    lower = key.lower().replace("-", "_")
    return lower if lower in _FIELDS else None


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """Raw values from a JSON object or an INI file (section ``[spot-agent]`` or no section)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"config file {p} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a JSON object")
        return data
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep the case of env-style keys
    try:
        parser.read_string(text if text.lstrip().startswith("[") else "[spot-agent]\n" + text)
    except configparser.Error as exc:
        raise ConfigError(f"config file {p} is neither JSON nor INI: {exc}") from exc
    section = "spot-agent" if parser.has_section("spot-agent") else (parser.sections() or [None])[0]
    return dict(parser.items(section)) if section else {}


def _coerce(name: str, value: Any) -> Any:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if name in _CADENCES or name in ("jitter", "ondemand_price"):
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be a number, got {value!r}") from exc
        if name == "jitter" and not 0 <= number <= 0.5:
            raise ConfigError(f"jitter must be between 0 and 0.5, got {number}")
        if name in _CADENCES and number <= 0:
            raise ConfigError(f"{name} must be positive, got {number}")
        if name == "ondemand_price" and number <= 0:
            raise ConfigError(f"ondemand_price must be positive, got {number}")
        return number
    if name == "instance_types":
        listed = [t.strip() for t in str(value).split(",") if t.strip()]
        bad = [t for t in listed if not _INSTANCE_TYPE.fullmatch(t)]
        if bad or len(listed) > MAX_INSTANCE_TYPES:
            raise ConfigError(f"instance_types must be a comma list of at most {MAX_INSTANCE_TYPES} EC2 instance "
                              f"types, got {value!r}")
        return ",".join(listed) or None
    return str(value).strip()


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                *, require_credentials: bool = True) -> AgentConfig:
    """The agent's config: defaults < file (if any) < environment.

    Raises ConfigError with a message naming the variable when the token or URL is missing
    (unless ``require_credentials`` is False, for ``spot-agent status``), or a value is malformed.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if path:
        for key, value in read_file(path).items():
            name = _field_name(key)
            if name is None:
                raise ConfigError(f"unknown key {key!r} in config file {path}")
            values[name] = _coerce(name, value)
    for env_name, name in ENV_NAMES.items():
        if env_name in env and env[env_name].strip() != "":
            values[name] = _coerce(name, env[env_name])
    config = AgentConfig(**{k: v for k, v in values.items() if v is not None})
    config = AgentConfig(**{**asdict(config), "server_url": config.server_url.rstrip("/")})
    return config.require_credentials() if require_credentials else config
