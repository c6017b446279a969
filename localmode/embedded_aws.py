"""The embedded AWS of local mode: a moto server plus the product's tables and admin key.

Tables come from the pynamodb models (chalicelib.tables), exactly as in tests and infra/.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import urllib.request
from dataclasses import dataclass

from moto.server import ThreadedMotoServer

LOCAL_REGION = "us-east-1"


def free_port() -> int:
    """An unused TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def point_sdk_at(endpoint: str, stage: str = "local") -> None:
    """Make boto3/pynamodb in this process (and its children) talk to the embedded AWS."""
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_DEFAULT_REGION=LOCAL_REGION, AWS_REGION=LOCAL_REGION,
        AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local", SPOT_STAGE=stage,
        MOTO_PORT=endpoint.rsplit(":", 1)[-1],
    )
    # Settings of another stage must not leak in (local mode names its bucket, tables and state machine).
    for name in ("AWS_PROFILE", "MODEL_BUCKET", "TABLE_PREFIX", "FAILOVER_STATE_MACHINE_ARN", "ADMIN_KEY_PARAMETER"):
        os.environ.pop(name, None)


@dataclass
class EmbeddedAws:
    """A running moto server with the product's resources created in it."""

    port: int
    server: ThreadedMotoServer

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop()


def start(port: int, admin_key: str | None) -> tuple[EmbeddedAws, str]:
    """Start moto on ``port``, create every table and store the admin-key hash in SSM.

    Returns the running AWS and the admin key (generated when none is given).
    """
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines from moto
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    aws = EmbeddedAws(port=port, server=server)
    point_sdk_at(aws.endpoint)
    _configure_moto(aws.endpoint)

    import boto3

    from chalicelib.auth import hash_secret
    from chalicelib.aws.s3 import ensure_bucket
    from chalicelib.settings import get_settings
    from chalicelib.tables.provisioning import ensure_tables

    ensure_tables()
    ensure_bucket()
    admin_key = admin_key or "adm_" + secrets.token_urlsafe(24)
    boto3.client("ssm").put_parameter(Name=get_settings().admin_key_parameter, Type="SecureString",
                                      Value=hash_secret(admin_key), Overwrite=True)
    return aws, admin_key


def _configure_moto(endpoint: str) -> None:
    """Run Step Functions executions for real (used by the failover workflow)."""
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    request = urllib.request.Request(f"{endpoint}/moto-api/config", data=json.dumps(config).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=5).close()
