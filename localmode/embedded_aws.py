"""The embedded AWS of local mode: a moto server (its own process) plus the product's tables and admin key.

Tables come from the pynamodb models (chalicelib.tables), exactly as in tests and infra/. The server
runs in a process of its own (``python -m localmode.embedded_aws``) so that it has a core to itself:
moto answers every request of the API, the jobs and the state machine, and is the busiest part of
local mode. The state machine's Lambda tasks are handed to the API process (``/_local/lambda``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from moto.ec2.models.amis import AMIS
from moto.server import ThreadedMotoServer

LOCAL_REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[1]
# An AMI every region of the embedded EC2 holds (moto's built-in list). DescribeImages without a filter makes
# moto serialise its ~1,300 images, seconds per call; naming this one is milliseconds.
IMAGE_ID = AMIS[0]["ami_id"]


def image_id(ec2) -> str:
    """An image id to launch from in the embedded EC2 (checked: the region's EC2 knows it)."""
    return ec2.describe_images(ImageIds=[IMAGE_ID])["Images"][0]["ImageId"]


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
    """A running moto server (a child process) with the product's resources created in it."""

    port: int
    process: subprocess.Popen

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _atomic_requests() -> None:
    """One AWS request at a time, as the real services behave; Lambda invocations excepted.

    moto's backends are not thread-safe: a DynamoDB transaction that fails restores a deep copy of the
    table, dropping what another thread wrote meanwhile, and a query can race a write ("dictionary
    changed size during iteration"). Local mode serves the API's threads, the state machine's threads
    and the jobs at once, so the server takes a lock per request. A Lambda invocation runs one of our
    handlers, which makes requests of its own, so it must not hold the lock. moto also lists its
    package directory on every request to route it (``list_of_moto_modules``); that list is fixed.
    """
    import threading
    from functools import cache

    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if getattr(DomainDispatcherApplication.__call__, "atomic", False):
        return
    backends.list_of_moto_modules = cache(lambda listed=tuple(backends.list_of_moto_modules()): listed)
    lock, dispatch = threading.Lock(), DomainDispatcherApplication.__call__

    def call(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/2015-03-31/functions/"):
            return dispatch(self, environ, start_response)
        with lock:
            return list(dispatch(self, environ, start_response))

    call.atomic = True
    DomainDispatcherApplication.__call__ = call


def _plain_json_dynamodb_results() -> None:
    """DynamoDB's item-bearing answers (GetItem, Query, PutItem, ...) as plain JSON.

    moto renders every response through a generic, shape-driven serializer that walks each attribute
    of each item; in local mode that is half of the embedded AWS's CPU. An item already is DynamoDB
    JSON, so ``json.dumps`` gives the same body (binary as base64, timestamps as epoch seconds, as the
    JSON protocol has it). Anything it cannot encode takes moto's own path.
    """
    import base64
    from datetime import datetime

    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoResult

    if getattr(DynamoResult.execute_result, "plain_json", False):
        return

    def wire(value):
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        if isinstance(value, datetime):
            return value.timestamp()
        raise TypeError(type(value).__name__)

    def execute_result(self, context):
        try:
            body = json.dumps(self.result, default=wire)
        except (TypeError, ValueError):
            return ActionResult.execute_result(self, context)
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, body

    execute_result.plain_json = True
    DynamoResult.execute_result = execute_result


def speed_up_moto() -> None:
    """moto's costs that grow with what it holds, made flat; every answer stays the same.

    Local mode's server and the test suite's in-process embedded AWS both install these: a demo week and
    a test session both fill the tables and the state machine's history, and each of moto's whole-table
    walks below made every later request slower. Installed once per process.
    """
    _item_level_transaction_rollback()
    _plain_json_dynamodb_results()
    _parse_each_definition_once()
    _direct_ec2_tags()
    _query_reads_its_partition()


def _item_level_transaction_rollback() -> None:
    """A DynamoDB transaction saves and restores only the items it writes.

    moto deep-copies every table a TransactWriteItems names before running it, to restore the copy if
    the transaction is cancelled: the cost of each transaction grows with the table. In the load bench
    (``bench/load.py``) the agents table holds hundreds of agents, their heartbeats and reports, and each
    failover writes it in transactions (the interruption's claim, the fences, the hand-over), all under
    the server's lock: py-spy found 60–70 requests queued behind those copies, the process at 6 GB, and
    the 50 failovers of a draining zone timing out. Same outcome: a cancelled transaction leaves every
    item as it was (under the lock of ``_atomic_requests`` nothing else writes meanwhile).
    """
    import copy
    import types

    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    if getattr(DynamoDBBackend.transact_write_items, "item_level", False):
        return

    def deepcopy(value, memo=None):
        return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    models.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)  # the module's only uses of `copy`
    run = DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            for op in entry.values():
                table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
                key = (op.get("Key") or op.get("Item")) if table is not None else None
                try:
                    hash_value, range_value = self.get_keys_value(table, key)
                except Exception:  # noqa: BLE001 - an invalid op: moto's own validation answers for it
                    continue
                saved.append((table, hash_value, range_value,
                              copy.deepcopy(table.get_item(hash_value, range_value))))
        try:
            return run(self, transact_items)
        except Exception:
            for table, hash_value, range_value, item in reversed(saved):
                _put_back(table, hash_value, range_value, item)
            raise

    transact_write_items.item_level = True
    DynamoDBBackend.transact_write_items = transact_write_items


def _put_back(table, hash_value, range_value, item) -> None:
    """Restore one item of a moto table as it was (``None``: absent), without a stream record."""
    if range_value is None:
        if item is None:
            table.items.pop(hash_value, None)
        else:
            table.items[hash_value] = item
        return
    rows = table.items[hash_value]
    if item is None:
        rows.pop(range_value, None)
        if not rows:
            table.items.pop(hash_value, None)
    else:
        rows[range_value] = item


def _parse_each_definition_once() -> None:
    """moto parses the state machine's ASL (an ANTLR grammar) again for every execution: a tenth of
    the embedded AWS's CPU with a failover every few seconds. Keep each definition's parse tree and
    build fresh evaluation components from it per execution (they hold per-execution state)."""
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    parse, trees = AmazonStateLanguageParser.parse, {}
    if getattr(parse, "once", False):
        return

    def parse_once(definition: str):
        if definition not in trees:
            program, trees[definition] = parse(definition)
            return program, trees[definition]
        return Preprocessor().visit(trees[definition]), trees[definition]

    parse_once.once = True
    AmazonStateLanguageParser.parse = staticmethod(parse_once)


def _direct_ec2_tags() -> None:
    """An EC2 resource's tags read from its own entry in the tag store.

    moto answers each resource's ``get_tags`` with ``describe_tags(resource-id=...)``, which walks every
    tag of every resource: a DescribeInstances with a tag filter (the failover's and the quotas' reads) is
    quadratic in the instances. With 600 instances (``bench/load.py``) one such call took seconds under the
    server's lock, and 50 simultaneous failovers queued behind each other for minutes. Same answer: the
    resource's (key, value) pairs in insertion order, with its resource type.
    """
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self) -> list[dict[str, str]]:
        resource_id = getattr(self, "id", None)
        if not resource_id:
            return []
        kind = EC2_PREFIX_TO_RESOURCE.get(get_prefix(resource_id), "")
        return [{"resource_id": resource_id, "key": key, "value": value, "resource_type": kind}
                for key, value in list(self.ec2_backend.tags.get(resource_id, {}).items())]

    get_tags.direct = True
    if not getattr(TaggedEC2Resource.get_tags, "direct", False):
        TaggedEC2Resource.get_tags = get_tags


def _query_reads_its_partition() -> None:
    """A DynamoDB Query looks at the items of its own partition, not the whole table.

    moto's ``Table.query`` starts from ``all_items()``, every item of the table sorted by key, for every
    query, then keeps those whose key matches: its cost grows with the table (n log n), and a test session's
    tables hold every earlier test's items. The query is handed only the items that can match instead: the
    table's bucket for its partition key, or, on an index, the items whose index key attributes equal the
    condition's, in ``all_items()``'s order. moto's own matching, sorting and paging then run unchanged.
    """
    import inspect

    from moto.dynamodb.models.table import Table

    if getattr(Table.query, "partition_only", False):
        return
    query, all_items, signature = Table.query, Table.all_items, inspect.signature(Table.query)
    narrowed = threading.local()

    def by_key(item):
        return (item.hash_key, item.range_key) if item.range_key else item.hash_key

    def each_item(table):
        for entry in list(table.items.values()):
            yield from (entry.values() if table.range_key_attr else (entry,))

    def partition(table, call) -> list:
        if not call.get("index_name"):
            entry = table.items.get(call["hash_key"])
            if entry is None:
                return []
            return sorted(entry.values(), key=by_key) if table.range_key_attr else [entry]
        conditions = call.get("hash_key_conditions") or []
        return sorted((item for item in each_item(table)
                       if all(_equal(item.attrs.get(name), value) for name, value in conditions)), key=by_key)

    def candidates(self):
        pick = getattr(narrowed, "pick", None)
        return pick() if pick is not None and pick.table is self else candidates.moto_all_items(self)

    def query_partition(self, *args, **kwargs):
        call = signature.bind(self, *args, **kwargs).arguments
        if call.get("index_name") and not call.get("hash_key_conditions") or call.get("hash_key") is None:
            return query(self, *args, **kwargs)  # a shape moto answers some other way: its own path

        def pick():
            narrowed.pick = None  # the query reads its candidates once
            return partition(self, call)

        pick.table, narrowed.pick = self, pick
        try:
            return query(self, *args, **kwargs)
        finally:
            narrowed.pick = None

    query_partition.partition_only, query_partition.moto_query, candidates.moto_all_items = True, query, all_items
    Table.query, Table.all_items = query_partition, candidates


def _equal(held, wanted) -> bool:
    """An item's attribute (``None``: absent) equals a key condition's value (moto's ``DynamoType``)."""
    return held is not None and held == wanted


def start(port: int, admin_key: str | None, *, api_url: str, clock_speed: float = 1.0,
          quiet: bool = False) -> tuple[EmbeddedAws, str]:
    """Start moto on ``port`` (Lambda invocations go to ``api_url``), create every table and store
    the admin-key hash in SSM.

    Returns the running AWS and the admin key (generated when none is given).
    """
    out = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(
        [sys.executable, "-m", "localmode.embedded_aws", "--port", str(port), "--api-url", api_url,
         "--clock-speed", str(clock_speed)], cwd=ROOT, stdout=out, stderr=out)
    aws = EmbeddedAws(port=port, process=process)
    try:
        wait_until_serving(process, f"{aws.endpoint}/moto-api/", "the embedded AWS")
        point_sdk_at(aws.endpoint)
        _configure_moto(aws.endpoint)
        return aws, _provision(admin_key)
    except BaseException:
        aws.stop()
        raise


def _provision(admin_key: str | None) -> str:
    """Tables, model bucket, fan-out queues and the admin-key hash; returns the admin key."""
    import boto3

    from chalicelib.auth import hash_secret
    from chalicelib.aws.s3 import ensure_bucket
    from chalicelib.settings import get_settings
    from chalicelib.tables.provisioning import ensure_tables
    from localmode.queues import ensure_queues

    ensure_tables()
    ensure_bucket()
    ensure_queues()
    admin_key = admin_key or "adm_" + secrets.token_urlsafe(24)
    boto3.client("ssm").put_parameter(Name=get_settings().admin_key_parameter, Type="SecureString",
                                      Value=hash_secret(admin_key), Overwrite=True)
    return admin_key


def _configure_moto(endpoint: str) -> None:
    """Run Step Functions executions for real (used by the failover workflow)."""
    config = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    request = urllib.request.Request(f"{endpoint}/moto-api/config", data=json.dumps(config).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=5).close()


def wait_until_serving(process: subprocess.Popen, url: str, what: str, timeout: float = 30) -> None:
    """Block until ``url`` answers; fail early if the child ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited during start-up")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout}s")


def serve(port: int, api_url: str, clock_speed: float) -> None:
    """The child process: moto on ``port`` until SIGTERM."""
    from localmode.workflows import compress_time, forward_lambda_invocations

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request lines from moto
    point_sdk_at(f"http://127.0.0.1:{port}")  # Step Functions calls Lambda through this server
    _atomic_requests()
    speed_up_moto()
    forward_lambda_invocations(api_url)
    compress_time(clock_speed)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())  # Ctrl-C reaches the whole group: the parent stops us
    server.start()
    stopping.wait()
    server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="local mode's embedded AWS (started by localmode.server)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-url", required=True, help="where Lambda invocations are sent")
    parser.add_argument("--clock-speed", type=float, default=1.0, help="Wait states last 1/speed of their time")
    args = parser.parse_args(argv)
    serve(args.port, args.api_url, args.clock_speed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
