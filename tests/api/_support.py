"""Helpers shared by the API tests: table snapshots, report bodies, error assertions."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from chalicelib.tables import ALL_TABLES, METERING_TABLES
from tests.conftest import aws_client


def scan_items(table) -> list[dict]:
    """Every item of one table in DynamoDB's typed JSON, through a real paginated Scan."""
    pages = aws_client("dynamodb", table.Meta.region).get_paginator("scan")
    return [item for page in pages.paginate(TableName=table.Meta.table_name, ConsistentRead=True)
            for item in page["Items"]]


def mock_items(table) -> list[dict] | None:
    """The same items read straight from the in-process mock (no HTTP round trip); None without it.

    A Scan through the mock costs ~3 ms per item, and the tables grow over the session, so snapshots
    taken around every request use this; ``test_snapshot_reads_what_a_scan_reads`` keeps it honest.
    """
    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.dynamodb.models import dynamodb_backends

        mock = dynamodb_backends[DEFAULT_ACCOUNT_ID][table.Meta.region].get_table(table.Meta.table_name)
    except Exception:  # noqa: BLE001 - not running against the in-process mock
        return None
    return [item.to_json()["Attributes"] for item in mock.all_items()]


def canonical(items: list[dict]) -> list[str]:
    """Items as sorted canonical JSON strings (order-free comparison)."""
    return sorted(json.dumps(item, sort_keys=True, default=str) for item in items)


def snapshot_tables() -> dict[str, list[str]]:
    """Every item of every table in ``ALL_TABLES`` but the request counters (``METERING_TABLES``),
    canonical and sorted per table."""
    snap = {}
    for table in ALL_TABLES:
        if table in METERING_TABLES:
            continue
        items = mock_items(table)
        snap[table.Meta.table_name] = canonical(scan_items(table) if items is None else items)
    return snap


SNAPSHOT_REGIONS = ("us-east-1", "eu-west-1")


def described_instances(region: str) -> list[dict]:
    """Every EC2 instance of the region (id, state, type, image, tags), through real DescribeInstances calls
    (every page: a page holds at most 100 reservations, and instances accumulate over the session)."""
    pages = aws_client("ec2", region).get_paginator("describe_instances").paginate()
    return [{"id": i["InstanceId"], "state": i["State"]["Name"], "type": i["InstanceType"], "image": i["ImageId"],
             "tags": sorted((t["Key"], t["Value"]) for t in i.get("Tags", []))}
            for page in pages for r in page["Reservations"] for i in r["Instances"]]


def mock_instances(region: str) -> list[dict] | None:
    """The same instances read straight from the in-process mock; None without it.

    DescribeInstances through the mock costs ~4 ms of CPU per instance (moto serialises every field of
    every instance), and instances accumulate over the session (hundreds by the time the API tests run),
    so snapshots taken around every request use this; ``test_ec2_snapshot_reads_what_describe_reads``
    keeps it honest. The account is the one moto serves the request from (``MOTO_ACCOUNT_ID`` first).
    """
    import os

    try:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        backend = ec2_backends[os.environ.get("MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)][region]
        return [{"id": i.id, "state": i._state.name, "type": i.instance_type, "image": i.image_id,
                 "tags": sorted(backend.tags.get(i.id, {}).items())} for i in backend.all_instances()]
    except Exception:  # noqa: BLE001 - not running against the in-process mock
        return None


def snapshot_ec2(regions: tuple[str, ...] = SNAPSHOT_REGIONS) -> dict[str, list[str]]:
    """EC2 instances (state, type, image, tags), EIP associations and target-group registrations, in the same
    canonical form as the tables: what a refused request must not have changed in AWS either."""
    snap = {}
    for region in regions:
        ec2, elb = aws_client("ec2", region), aws_client("elbv2", region)
        instances = mock_instances(region)
        snap[f"ec2:{region}:instances"] = canonical(described_instances(region) if instances is None else instances)
        snap[f"ec2:{region}:addresses"] = canonical(
            {"allocation": a.get("AllocationId"), "instance": a.get("InstanceId")}
            for a in ec2.describe_addresses()["Addresses"])
        snap[f"elbv2:{region}:targets"] = canonical(
            {"group": g["TargetGroupArn"], "targets": sorted(d["Target"]["Id"] for d in elb.describe_target_health(
                TargetGroupArn=g["TargetGroupArn"])["TargetHealthDescriptions"])}
            for g in elb.describe_target_groups()["TargetGroups"])
    return snap


def snapshot_world() -> dict[str, list[str]]:
    """Every table (``snapshot_tables``) and the EC2/ELBv2 state (``snapshot_ec2``)."""
    return {**snapshot_tables(), **snapshot_ec2()}


def diff_snapshots(before: dict[str, list[str]], after: dict[str, list[str]]) -> dict[str, dict]:
    """Per table, what appeared and what vanished between two snapshots (empty when equal)."""
    changes = {}
    for name in sorted(set(before) | set(after)):
        old, new = set(before.get(name, ())), set(after.get(name, ()))
        if old != new:
            changes[name] = {"added": sorted(new - old), "removed": sorted(old - new)}
    return changes


def assert_error(status: int, body, expected_status: int, *, code: str | None = None,
                 field: str | None = None) -> None:
    """A JSON error in the product shape with the expected status (and code/field if given)."""
    assert status == expected_status, (status, body)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["error"] == code, body
    if field is not None:
        assert body.get("field") == field, body


def utc(text: str) -> datetime:
    """Parse an ISO-8601 'Z' timestamp as an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def iso(value: datetime) -> str:
    """Render an aware datetime as ISO-8601 with a Z suffix."""
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def now_utc() -> datetime:
    """The wall clock, UTC."""
    return datetime.now(timezone.utc)


def random_instance_type() -> str:
    """A syntactically valid instance type no other test uses, so its pools are this test's own."""
    return f"t{uuid.uuid4().hex[:8]}.large"


def pricing_body(instance_id: str, instance_type: str, prices: dict[str, float], *,
                 on_demand: float | None = 0.1, current: float | None = None,
                 collected_at: datetime | None = None, az: str = "eu-west-1a") -> dict:
    """A legacy-shaped pricing report; ``prices`` maps AZ -> spot price for ``instance_type``."""
    pricing = {"spot_pools": [{"instance_type": instance_type, "az": zone, "price": price}
                              for zone, price in prices.items()]}
    if on_demand is not None:
        pricing["on_demand_price"] = on_demand
    if current is not None:
        pricing["current_spot_price"] = current
    if collected_at is not None:
        pricing["collected_at"] = iso(collected_at)
    return {"instance": {"instance_id": instance_id, "instance_type": instance_type,
                         "region": "eu-west-1", "az": az, "mode": "spot"},
            "pricing": pricing}


def switch_body(old_instance_id: str, new_instance_id: str, *, old_mode: str = "spot",
                new_mode: str = "spot", prices: dict | None = None, timing: dict | None = None,
                legacy_names: bool = False, command_id: str | None = None,
                new_az: str = "eu-west-1b") -> dict:
    """A switch report with the agent's field names, or the legacy server's when ``legacy_names``."""
    prices = prices if prices is not None else {"on_demand": 0.107, "old_spot": 0.040, "new_spot": 0.031}
    timing = timing if timing is not None else {
        "switch_initiated_at": "2026-01-01T00:00:00Z", "new_instance_launched_at": "2026-01-01T00:00:40Z",
        "new_instance_ready_at": "2026-01-01T00:01:30Z", "traffic_switched_at": "2026-01-01T00:01:32Z"}
    body = {"old_instance": {"instance_id": old_instance_id, "instance_type": "m5.large",
                             "az": "eu-west-1a", "mode": old_mode},
            "new_instance": {"instance_id": new_instance_id, "instance_type": "m5.large",
                             "region": "eu-west-1", "az": new_az, "mode": new_mode},
            "snapshot": {"used": False}, "trigger": "manual"}
    if new_mode == "spot":
        body["new_instance"]["pool_id"] = f"m5.large.{new_az}"
    body["pricing" if legacy_names else "prices"] = prices
    body["timing"] = timing
    if command_id:
        body["command_id"] = command_id
    return body


def live_instance(tags: dict[str, str] | None = None, *, az: str = "eu-west-1b", spot: bool = True) -> str:
    """A live m5.large (spot unless ``spot`` is False) in the (home, shared) moto account, tagged as given: an
    operator's bastion when untagged, a switch's replacement when tagged ``ReplacesInstance`` as the product's
    agent tags it."""
    from localmode.embedded_aws import image_id

    client = aws_client("ec2", az[:-1])
    params = {"ImageId": image_id(client), "InstanceType": "m5.large", "MinCount": 1, "MaxCount": 1,
              "Placement": {"AvailabilityZone": az}}
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}}
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "instance",
                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return client.run_instances(**params)["Instances"][0]["InstanceId"]


def shifted(seconds: float) -> datetime:
    """Now plus ``seconds``."""
    return now_utc() + timedelta(seconds=seconds)


def unchanged(call):
    """Run ``call`` and assert it wrote nothing to any table; returns its result."""
    before = snapshot_tables()
    result = call()
    assert diff_snapshots(before, snapshot_tables()) == {}
    return result


def walk(admin, path, key, *, stop=lambda rows: False, limit=200):
    """Every row of a paginated admin listing (or up to the page where ``stop`` is true)."""
    rows, token = [], None
    while True:
        sep = "&" if "?" in path else "?"
        status, body = admin.get(f"{path}{sep}limit={limit}" + (f"&next_token={token}" if token else ""))
        assert status == 200, body
        rows += body[key]
        token = body["next_token"]
        if not token or stop(rows):
            return rows


def forget_capacity(*pool_ids: str) -> None:
    """Drop every capacity observation of these pools. Pools are shared by all tenants (what one agent sees,
    all see), so in the session's one embedded AWS an earlier test's refusals can leave a pool in back-off;
    a test that needs its pools open starts from no history."""
    from chalicelib.tables.observations import ObservationTable

    for pool_id in pool_ids:
        with ObservationTable.batch_write() as batch:
            for item in ObservationTable.query(pool_id):
                batch.delete(item)


def recent_audit_events(event_type: str, where=lambda event: True) -> list:
    """Audit events of one type (and ``where``) in today's and yesterday's day partitions (UTC), read consistently.
    Yesterday's too: an event recorded just before midnight is in the previous day's partition when the test reads
    it a moment later."""
    from chalicelib.tables.system_events import SystemEventTable

    now = now_utc()
    return [event for day in (now - timedelta(days=1), now)
            for event in SystemEventTable.query(day.strftime("%Y-%m-%d"), consistent_read=True)
            if event.event_type == event_type and where(event)]
