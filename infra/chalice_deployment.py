"""What ``chalice deploy`` left for the steps after it: the stage's REST API id and its API Gateway stage.

The post-deploy steps (infra/throttling.py, infra/gateway_responses.py) change that API, and the stack's alarms
(infra/stack.py) name its stage; all of them read it here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class NotDeployed(Exception):
    """The stage has no REST API recorded by ``chalice deploy`` (not deployed yet, or another project)."""


def rest_api_id(stage: str, project: Path = ROOT) -> str:
    """The REST API id ``chalice deploy`` recorded for the stage (.chalice/deployed/<stage>.json)."""
    path = project / ".chalice" / "deployed" / f"{stage}.json"
    try:
        resources = json.loads(path.read_text())["resources"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise NotDeployed(f"cannot read {path} ({exc}): run `chalice deploy --stage {stage}` first") from exc
    for resource in resources:
        if resource.get("resource_type") == "rest_api" and resource.get("rest_api_id"):
            return resource["rest_api_id"]
    raise NotDeployed(f"{path} has no rest_api resource")


def api_gateway_stage(stage: str, project: Path = ROOT) -> str:
    """The API Gateway stage the stage's API is deployed to (``api_gateway_stage`` of .chalice/config.json)."""
    config = json.loads((project / ".chalice" / "config.json").read_text())
    return config["stages"].get(stage, {}).get("api_gateway_stage") or config.get("api_gateway_stage", "api")


def post_deploy_args(description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line every post-deploy step takes: ``--stage``, ``--region`` and the Chalice ``--project``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--stage", required=True)
    parser.add_argument("--region", help="defaults to AWS_REGION / AWS_DEFAULT_REGION")
    parser.add_argument("--project", type=Path, default=ROOT, help="the Chalice project (default: this repo)")
    return parser.parse_args(argv)
