"""Local mode walked as an attacker who holds a valid client token (issue #12).

    python -m localmode.attack_walk [--fuzz-per-route N]     (make attack-walk)

It starts local mode (embedded AWS + ``chalice local``), sets up a victim tenant with a verified agent, an
Elastic IP and a target group pointing at its instance, an instance nobody registered, and resources in a
second AWS account; then an attacker tenant with its own verified agent tries what the issue lists: a
launch with an AMI or instance type of its choosing, terminating or cloning an instance it does not own,
moving an EIP or target group it does not own, acting as another agent, and a fuzz run over every route.

Every attack must be refused with a 4xx, and the snapshot of EC2 instances, EIP associations and
target-group registrations outside the attacker's own resources must be unchanged at the end. The walk
prints one line per check and exits non-zero if any fails (tests/e2e/test_attack_walk.py runs it).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import re
import sys
import uuid
from dataclasses import dataclass, field

import requests

from localmode.embedded_aws import LOCAL_REGION, free_port, image_id

FOREIGN_ACCOUNT = "222222222222"
ZONE = f"{LOCAL_REGION}a"
ATTACKER_AMI = "ami-0attacker0000000"
ABSURD_TYPE = "u-24tb1.112xlarge"


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""


@dataclass
class Http:
    """One fresh connection per call (chalice local is slow on keep-alive)."""

    base: str

    def call(self, method: str, path: str, body=None, *, token: str | None = None, admin: str | None = None,
             raw: bytes | None = None) -> tuple[int, dict | str]:
        headers = {"Content-Type": "application/json", "Connection": "close"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if admin:
            headers["X-Admin-Key"] = admin
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        response = requests.request(method, self.base + path, data=data, headers=headers, timeout=60)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text


@dataclass
class Tenant:
    client_id: str
    token: str
    agent_id: str = ""
    agent_credential: str = ""
    instance_id: str = ""


@dataclass
class World:
    """What the walk set up, and the boto3 clients that see it."""

    ec2: object
    elb: object
    foreign_ec2: object
    foreign_elb: object
    victim: Tenant
    attacker: Tenant
    bystander_instance: str = ""
    victim_eip: str = ""
    victim_tg: str = ""
    foreign_instance: str = ""
    foreign_eip: str = ""
    foreign_tg: str = ""
    attacker_big_instance: str = ""
    attacker_owned: set[str] = field(default_factory=set)


def _aws_clients(endpoint: str, account: str | None = None):
    import boto3

    session = boto3.session.Session(region_name=LOCAL_REGION)
    if account:
        creds = session.client("sts", endpoint_url=endpoint).assume_role(
            RoleArn=f"arn:aws:iam::{account}:role/walk", RoleSessionName="walk")["Credentials"]
        session = boto3.session.Session(region_name=LOCAL_REGION, aws_access_key_id=creds["AccessKeyId"],
                                        aws_secret_access_key=creds["SecretAccessKey"],
                                        aws_session_token=creds["SessionToken"])
    return session.client("ec2", endpoint_url=endpoint), session.client("elbv2", endpoint_url=endpoint)


def _instance(ec2, itype: str = "m5.large", **tags) -> str:
    params = {"ImageId": image_id(ec2), "InstanceType": itype,
              "MinCount": 1, "MaxCount": 1, "Placement": {"AvailabilityZone": ZONE}}
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "instance",
                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return ec2.run_instances(**params)["Instances"][0]["InstanceId"]


def _target_group(ec2, elb, name: str, instance_id: str | None = None) -> str:
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    arn = elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0]["TargetGroupArn"]
    if instance_id:
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": instance_id}])
    return arn


def _eip(ec2, instance_id: str | None = None) -> str:
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    if instance_id:
        ec2.associate_address(AllocationId=allocation, InstanceId=instance_id)
    return allocation


def snapshot(world: World) -> dict:
    """Instances (state, type, image, tags), EIP associations and target-group registrations of both accounts."""
    found: dict = {}
    for label, ec2, elb in (("home", world.ec2, world.elb), ("foreign", world.foreign_ec2, world.foreign_elb)):
        found[f"{label}/instances"] = {
            i["InstanceId"]: (i["State"]["Name"], i["InstanceType"], i["ImageId"],
                              tuple(sorted((t["Key"], t["Value"]) for t in i.get("Tags", []))))
            for page in ec2.get_paginator("describe_instances").paginate()
            for r in page["Reservations"] for i in r["Instances"]}
        found[f"{label}/addresses"] = {a["AllocationId"]: a.get("InstanceId")
                                       for a in ec2.describe_addresses()["Addresses"]}
        found[f"{label}/targets"] = {
            g["TargetGroupArn"]: sorted(d["Target"]["Id"] for d in elb.describe_target_health(
                TargetGroupArn=g["TargetGroupArn"])["TargetHealthDescriptions"])
            for g in elb.describe_target_groups()["TargetGroups"]}
    return found


def _not_attackers(snap: dict, attacker_owned: set[str]) -> dict:
    """The snapshot without the attacker's own instances (its own legitimate launches may change them)."""
    out = dict(snap)
    for key in ("home/instances", "foreign/instances"):
        out[key] = {i: v for i, v in snap[key].items() if i not in attacker_owned}
    return out


def _register(http: Http, tenant: Tenant, instance_id: str, *, account: str | None = None,
              instance_type: str = "m5.large", signer=None) -> tuple[int, dict | str]:
    from localmode.identity_signer import LOCAL_ACCOUNT_ID, identity_document, sign

    document = identity_document(instance_id=instance_id, instance_type=instance_type, az=ZONE,
                                 account_id=account or LOCAL_ACCOUNT_ID)
    body = {"instance_id": instance_id, "instance_type": instance_type, "region": LOCAL_REGION, "az": ZONE,
            "logical_agent_id": f"walk-{uuid.uuid4().hex[:8]}", "mode": "spot", "agent_version": "walk",
            "identity_document": document, "identity_signature": (signer or sign)(document)}
    return http.call("POST", "/api/agents/register", body, token=tenant.token)


def _forged_signature(document: str) -> str:
    """A valid RSA-SHA256 signature by a key AWS never issued."""
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return base64.b64encode(key.sign(document.encode(), PKCS1v15(), SHA256())).decode()


def setup(http: Http, admin_key: str, endpoint: str) -> World:
    ec2, elb = _aws_clients(endpoint)
    foreign_ec2, foreign_elb = _aws_clients(endpoint, FOREIGN_ACCOUNT)

    def tenant(name: str) -> Tenant:
        status, reply = http.call("POST", "/api/admin/clients/create", {"name": name}, admin=admin_key)
        assert status in (200, 201), (status, reply)
        return Tenant(reply["client_id"], reply["client_token"])

    world = World(ec2, elb, foreign_ec2, foreign_elb, tenant("walk-victim"), tenant("walk-attacker"))
    for who in (world.victim, world.attacker):
        who.instance_id = _instance(ec2)
        status, reply = _register(http, who, who.instance_id)
        assert status == 200, (status, reply)
        who.agent_id, who.agent_credential = reply["agent_id"], reply["agent_credential"]
    world.attacker_big_instance = _instance(ec2, ABSURD_TYPE)  # the attacker's own, to register
    world.attacker_owned |= {world.attacker.instance_id, world.attacker_big_instance}
    world.bystander_instance = _instance(ec2, Name="operators-bastion")
    world.victim_eip = _eip(ec2, world.victim.instance_id)
    world.victim_tg = _target_group(ec2, elb, "walk-victim", world.victim.instance_id)
    world.foreign_instance = _instance(foreign_ec2)
    world.foreign_eip = _eip(foreign_ec2, world.foreign_instance)
    world.foreign_tg = _target_group(foreign_ec2, foreign_elb, "walk-foreign", world.foreign_instance)
    return world


def _refused(status: int) -> bool:
    return 400 <= status < 500


def attacks(http: Http, world: World) -> list[Check]:
    """Each attack with the attacker's client token or agent credential; each must answer 4xx."""
    a, v = world.attacker, world.victim
    token, cred = a.token, a.agent_credential
    agent = f"/api/agents/{a.agent_id}"
    checks: list[Check] = []

    def expect_refused(name: str, method: str, path: str, body=None, *, as_token: str | None = None) -> None:
        status, reply = http.call(method, path, body, token=as_token or token)
        checks.append(Check(name, _refused(status), f"{status} {str(reply)[:160]}"))

    # -- launches of the attacker's choosing
    status, reply = _register(http, a, world.attacker_big_instance, instance_type=ABSURD_TYPE)
    checks.append(Check("register an absurd instance type", _refused(status), f"{status} {str(reply)[:160]}"))
    expect_refused("allow an absurd type for the own agent", "POST", f"/api/client/agents/{a.agent_id}/config",
                   {"instance_types": [ABSURD_TYPE, "p5.48xlarge"]})
    for name, path, body in (
            ("manual replica with a client AMI", f"{agent}/manual-replica/enable",
             {"ami_id": ATTACKER_AMI, "instance_type": ABSURD_TYPE}),
            ("standby with a client AMI and type", f"{agent}/replicas",
             {"ami_id": ATTACKER_AMI, "instance_type": ABSURD_TYPE, "az": ZONE}),
            ("emergency replica with a client AMI", f"{agent}/create-emergency-replica",
             {"ami_id": ATTACKER_AMI, "instance_type": ABSURD_TYPE})):
        status, reply = http.call("POST", path, body, token=token)  # its own agent: what runs is judged at the end
        checks.append(Check(f"{name}: no 5xx", status < 500, f"{status} {str(reply)[:160]}"))
    # -- terminate / clone what it does not own
    for label, target in (("the victim's instance", v.instance_id), ("an unregistered instance", world.bystander_instance),
                          ("another account's instance", world.foreign_instance)):
        status, reply = http.call("POST", f"{agent}/replicas", {"instance_id": target}, token=token)
        checks.append(Check(f"claim {label} as a standby", _refused(status), f"{status} {str(reply)[:160]}"))
        status, reply = http.call("POST", "/api/agents/register", {
            "instance_id": target, "instance_type": "m5.large", "region": LOCAL_REGION, "az": ZONE,
            "logical_agent_id": f"walk-{uuid.uuid4().hex[:8]}", "mode": "spot"}, token=token)
        checks.append(Check(f"register {label} without an identity document", _refused(status),
                            f"{status} {str(reply)[:120]}"))
        status, reply = _register(http, a, target, signer=_forged_signature)
        checks.append(Check(f"register {label} with a forged signature", status == 403, f"{status} {str(reply)[:120]}"))
        expect_refused(f"force-switch {label}", "POST", f"/api/client/instances/{target}/force-switch",
                       {"target": "ondemand"})
    expect_refused("termination report for the victim's instance", "POST", f"{agent}/termination",
                   {"instance_id": v.instance_id, "reason": "spot-interruption"}, as_token=cred)
    # -- hand-over resources it does not own
    for label, body in (("the victim's EIP", {"handover": "eip", "eip_allocation_id": world.victim_eip}),
                        ("another account's EIP", {"handover": "eip", "eip_allocation_id": world.foreign_eip}),
                        ("the victim's target group", {"handover": "target-group", "target_group_arn": world.victim_tg}),
                        ("another account's target group",
                         {"handover": "target-group", "target_group_arn": world.foreign_tg})):
        expect_refused(f"hand over through {label}", "POST", f"/api/client/agents/{a.agent_id}/config", body)
    # -- acting as another agent
    victim_agent = f"/api/agents/{v.agent_id}"
    for method, path, body in (("POST", f"{victim_agent}/heartbeat", {"status": "online"}),
                               ("GET", f"{victim_agent}/pending-commands", None),
                               ("POST", f"{victim_agent}/switch-report", {"new_instance_id": a.instance_id}),
                               ("POST", f"{victim_agent}/termination", {"reason": "spot-interruption"}),
                               ("POST", f"{victim_agent}/termination-imminent", {"instance_id": v.instance_id}),
                               ("POST", f"{victim_agent}/pricing-report", {"pricing": {"spot_pools": []}})):
        expect_refused(f"agent credential on {method} {path.replace(v.agent_id, '<victim>')}", method, path, body,
                       as_token=cred)
        expect_refused(f"client token on {method} {path.replace(v.agent_id, '<victim>')}", method, path, body)
    for method, path in (("GET", "/api/client/validate"), ("GET", "/api/notifications"),
                         ("GET", f"/api/client/agents/{a.agent_id}/decisions"), ("GET", "/api/admin/clients")):
        expect_refused(f"agent credential on client/admin route {path}", method, path, as_token=cred)
    return checks


# -- fuzz ---------------------------------------------------------------------------------------------------

_NASTY = ["9999-12-31T23:59:59Z", "²", "9" * 60, "-1", "i-0123456789abcdef0", "m5.large", "us-east-1a",
          "u-24tb1.112xlarge", "ami-0attacker0000000", "€" * 3000, "\x00", "../../etc/passwd", "", 1e-200, 1e300,
          10 ** 39, -1, 0, True, None]


def _value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth < 3 and roll < 0.2:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and roll < 0.4:
        return {rng.choice(_FIELDS): _value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    return rng.choice(_NASTY)


_FIELDS = ["instance_id", "instance_type", "az", "region", "ami_id", "eip_allocation_id", "target_group_arn",
           "handover", "status", "mode", "pricing", "spot_pools", "price", "new_instance_id", "replica_id",
           "instance_types", "requirements", "detected_at", "limit", "tags", "manual_replica_enabled"]


def fuzz(http: Http, world: World, per_route: int, seed: int = 12) -> list[Check]:
    """Random bodies and path values on every route the app registers, with each of the attacker's credentials."""
    from app import app

    rng = random.Random(seed)
    ids = [world.attacker.agent_id, world.victim.agent_id, world.victim.instance_id, world.foreign_instance,
           "x" * 128, "a.b:c-d"]
    fives: list[str] = []
    sent = 0
    for path, methods in sorted(app.routes.items()):
        if path.startswith("/_local"):
            continue
        for method in methods:
            for _ in range(per_route):
                url = re.sub(r"\{(\w+)\}", lambda _m: rng.choice(ids), path)
                body = {rng.choice(_FIELDS): _value(rng) for _ in range(rng.randint(0, 6))}
                raw = json.dumps(body, ensure_ascii=False).encode() if rng.random() < 0.9 else b"[" * 500
                for credential in (world.attacker.token, world.attacker.agent_credential, None):
                    status, _ = http.call(method, url, token=credential, raw=None if method == "GET" else raw)
                    sent += 1
                    if status >= 500:
                        fives.append(f"{method} {url} → {status}")
    return [Check(f"fuzz: {sent} requests over every route, 0 × 5xx", not fives, "; ".join(fives[:5]))]


def walk(http: Http, admin_key: str, endpoint: str, per_route: int) -> list[Check]:
    world = setup(http, admin_key, endpoint)
    before = snapshot(world)
    checks = attacks(http, world)
    checks += fuzz(http, world, per_route)
    after = snapshot(world)
    launched = {i: v for i, v in after["home/instances"].items() if i not in before["home/instances"]}
    world.attacker_owned |= set(launched)  # its own legitimate standbys may exist; judged by what they are
    bad = {i: v for i, v in launched.items() if v[1] == ABSURD_TYPE and i not in before["home/instances"]
           or v[2] == ATTACKER_AMI}
    checks.append(Check("no instance launched with the attacker's AMI or type", not bad, str(bad)[:300]))
    stray = [i for i, v in launched.items() if ("ClientId", world.attacker.client_id) not in v[3]
             and ("ManagedBy", "SpotOptimizer") in v[3]]
    checks.append(Check("no product launch for the attacker outside its own client", not stray, str(stray)))
    unchanged_before, unchanged_after = (_not_attackers(s, world.attacker_owned) for s in (before, after))
    unchanged_after = {k: ({i: x for i, x in v.items() if i in unchanged_before[k]} if k.endswith("instances") else v)
                       for k, v in unchanged_after.items()}
    diff = {k: (unchanged_before[k], unchanged_after[k]) for k in before if unchanged_before[k] != unchanged_after[k]}
    checks.append(Check("EC2 instances, EIP associations and target groups outside the attacker's own: unchanged",
                        not diff, json.dumps(diff, default=str)[:400]))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--fuzz-per-route", type=int, default=4)
    args = parser.parse_args(argv)
    from localmode.server import LocalStack

    with LocalStack(free_port(), free_port(), run_jobs=False, quiet=True) as stack:
        checks = walk(Http(stack.api_url), stack.admin_key, stack.aws.endpoint, args.fuzz_per_route)
    for check in checks:
        print(f"{'PASS' if check.passed else 'FAIL'}  {check.name}" + ("" if check.passed else f"  — {check.detail}"))
    failed = sum(not c.passed for c in checks)
    print(f"\n{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
