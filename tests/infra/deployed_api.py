"""A REST API as ``chalice deploy`` leaves it (in the ``aws`` fixture's embedded AWS: conftest.py), and the Chalice project that names it: what the post-deploy
steps (infra/throttling.py, infra/gateway_responses.py) read and change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def deployed_api(client, stage_name: str = "api") -> str:
    """A REST API deployed to a stage, as ``chalice deploy`` leaves it (one route, no gateway response)."""
    api = client.create_rest_api(name="spot-optimizer")["id"]
    root = client.get_resources(restApiId=api)["items"][0]["id"]
    client.put_method(restApiId=api, resourceId=root, httpMethod="GET", authorizationType="NONE")
    client.put_integration(restApiId=api, resourceId=root, httpMethod="GET", type="MOCK")
    client.create_deployment(restApiId=api, stageName=stage_name)
    return api


def project(tmp_path: Path, api_id: str | None, stage: str = "dev") -> Path:
    """A Chalice project with this repo's config and, given an API id, the deployed state chalice deploy writes."""
    (tmp_path / ".chalice" / "deployed").mkdir(parents=True)
    shutil.copy(ROOT / ".chalice" / "config.json", tmp_path / ".chalice" / "config.json")
    if api_id:
        (tmp_path / ".chalice" / "deployed" / f"{stage}.json").write_text(json.dumps({"schema_version": "2.0", "resources": [
            {"name": "api_handler", "resource_type": "lambda_function", "lambda_arn": "arn:aws:lambda:x"},
            {"name": "rest_api", "resource_type": "rest_api", "rest_api_id": api_id,
             "rest_api_url": f"https://{api_id}.execute-api.{REGION}.amazonaws.com/{stage}/"}]}))
    return tmp_path
