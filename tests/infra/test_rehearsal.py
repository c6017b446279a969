"""Deploy rehearsal: the synthesised infra stack is CREATED in an emulated account (moto's CloudFormation).

What it proves and what only a real account can: docs/deploy-rehearsal.md. In short:

1. ``cdk synth`` of the dev stage by infra/main.py itself (a stand-in layer directory); every stack of the
   cloud assembly is rehearsed, dependencies first.
2. A moto server in a child process, alone: its account (``ACCOUNT``) and region (``REGION``) are not the
   session's mock (tests/conftest.py), so ARNs carry values a stray default cannot fake, and nothing the
   rehearsal creates (the model bucket's global name included) meets the tables other tests use. An in-process
   ``ThreadedMotoServer`` would share moto's module-level backends with that mock.
3. "``cdk bootstrap``" of the emulated account (the asset bucket and the ``BootstrapVersion`` SSM parameter
   the template names), then "asset publishing" as the CDK CLI does it, from the cloud assembly's
   ``*.assets.json``: every file asset zipped and put at its destination key.
4. ``create_stack`` of the template, resource types moto cannot create removed (``UNSUPPORTED``: the test
   fails when a new one appears); those with a service API (alarms, policies, subscriptions...) are then
   applied through it with their properties resolved against the created resources, as CloudFormation would.
5. Every resource of the template exists, and every reference is wired to something that exists: tables
   (named as ``chalicelib.tables``), bucket, parameter, topic, state machine → function ARNs, role → policy,
   log groups, alarms, rule → targets, queue → dead-letter queue, outputs → ``.chalice/config.json``
   (``infra/wire_outputs.py``). Any ARN of the emulated account found in any property or output must name a
   resource that exists, or a function ``chalice deploy`` creates (``infra.policies.FUNCTIONS``).
6. The app's side: ``chalice package``'s template (generated in-process, without ``pip download``) is checked
   statically against the stack: function names, the failover tasks, the event sources, the environment.

Written against resource *types*, not counts or logical ids, so new resources of known types need no edit.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from chalicelib import workflows
from chalicelib.settings import get_settings
from chalicelib.tables import ALL_TABLES
from tests.infra._support import stand_in_layer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STAGE = "dev"
REGION, ACCOUNT = "eu-central-1", "210987654321"  # the emulated account: neither the session's nor moto's default
FORWARDED_REGION = "us-west-2"  # a region whose events a forwarder stack sends to REGION

# Resource types moto's CloudFormation cannot create (moto 5.2), each with what the rehearsal does instead.
# ``shim``: applied through the service's API after the stack, properties resolved (see SHIMS below);
# ``skip``: not created; its references are still resolved and checked. A type missing here fails the test.
UNSUPPORTED = {
    "AWS::CloudWatch::Alarm": "shim: put_metric_alarm with the template's properties",
    "AWS::CloudWatch::CompositeAlarm": "skip: moto implements no put_composite_alarm; its AlarmRule's alarms are checked",
    "AWS::S3::BucketPolicy": "shim: put_bucket_policy",
    "AWS::SNS::TopicPolicy": "shim: set_topic_attributes(Policy)",
    "AWS::SNS::Subscription": "shim: subscribe",
    "AWS::SQS::QueuePolicy": "shim: set_queue_attributes(Policy)",
    "AWS::IAM::ServiceLinkedRole": "shim: create_service_linked_role",
    "AWS::Lambda::EventInvokeConfig": "shim: put_function_event_invoke_config",
    "AWS::Events::EventBusPolicy": "shim: put_permission (the statement, or Action/Principal/Condition)",
    "AWS::CDK::Metadata": "skip: CDK's version analytics, no AWS resource",
    "Custom::*": "skip: a Lambda-backed custom resource; moto would run the provider (Node.js, in Docker) and wait "
                 "for its callback. The provider function itself is created and checked",
}

# What moto does differently from CloudFormation and what the test does about it (docs/deploy-rehearsal.md).
#   - AWS::SSM::Parameter Tags: a map in CloudFormation, moto's create wants a list -> converted (ADAPTATIONS).
#   - AWS::Lambda::LayerVersion: moto ignores LayerName and its Ref is not the version ARN -> the layer is
#     looked up by its description; the LayerArn output is checked only when it is an ARN.
#   - AWS::S3::Bucket: moto applies only BucketName, BucketEncryption and Tags; versioning, lifecycle, public
#     access block and ownership controls are checked statically (tests/infra/test_stack.py), not here.
#   - AWS::StepFunctions::StateMachine: moto ignores DefinitionSubstitutions -> the definition is passed as
#     the equivalent Fn::Sub (ADAPTATIONS), which moto evaluates, so the substituted ARNs are still checked.
#   - AWS::StepFunctions::StateMachine: moto drops LoggingConfiguration / TracingConfiguration -> their
#     references are resolved from the template and checked to exist.


# --- synth -----------------------------------------------------------------------------------------

@dataclass
class SynthStack:
    """One stack of the cloud assembly, as the CDK CLI reads it from ``manifest.json``."""

    artifact_id: str
    name: str
    template: dict
    region: str
    tags: dict
    assets: dict  # its ``*.assets.json`` ({"files": {}} when it has no assets)
    dependencies: list[str]


def read_assembly(outdir: Path) -> list[SynthStack]:
    """Every stack of a cloud assembly, dependencies first (the order ``cdk deploy --all`` uses)."""
    artifacts = json.loads((outdir / "manifest.json").read_text())["artifacts"]
    assets = {name: json.loads((outdir / a["properties"]["file"]).read_text())
              for name, a in artifacts.items() if a["type"] == "cdk:asset-manifest"}
    stacks = {}
    for name, artifact in artifacts.items():
        if artifact["type"] != "aws:cloudformation:stack":
            continue
        props, region = artifact["properties"], artifact["environment"].rsplit("/", 1)[-1]
        dependencies = artifact.get("dependencies", [])
        stacks[name] = SynthStack(
            artifact_id=name, name=props.get("stackName", name),
            template=json.loads((outdir / props["templateFile"]).read_text()),
            region=REGION if region == "unknown-region" else region, tags=props.get("tags", {}),
            assets=next((assets[d] for d in dependencies if d in assets), {"files": {}}),
            dependencies=[d for d in dependencies if artifacts.get(d, {}).get("type") == "aws:cloudformation:stack"])
    ordered: list[SynthStack] = []
    while len(ordered) < len(stacks):
        ready = [s for s in stacks.values() if s not in ordered and all(stacks[d] in ordered for d in s.dependencies)]
        assert ready, f"dependency cycle among {sorted(stacks)}"
        ordered.extend(ready)
    return ordered


@pytest.fixture(scope="module")
def assembly(tmp_path_factory):
    """(cloud assembly folder, its stacks) of the dev stage, synthesised by infra/main.py as `cdk deploy` runs it,
    with a stand-in layer directory (the 190 MB layer is neither needed nor copied)."""
    import aws_cdk

    import infra.stack
    from infra.main import main

    layer_dir = stand_in_layer(tmp_path_factory)
    outdir = tmp_path_factory.mktemp("cdk.out")
    real_app = aws_cdk.App

    def app_in_outdir(*args, **kwargs):  # what CDK_OUTDIR does under the CLI (jsii's node process has its own env)
        return real_app(*args, **{**kwargs, "outdir": str(outdir)})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(infra.stack, "DEFAULT_LAYER_DIR", layer_dir)
        patch.setattr(aws_cdk, "App", app_in_outdir)
        # one forwarder stack (another region, forwarding to REGION) is rehearsed with the stage's stack
        assert main(["-c", f"stage={STAGE}", "-c", f"region={REGION}", "-c", f"event_regions={FORWARDED_REGION}"]) == 0
    return outdir, read_assembly(outdir)


# --- the emulated account ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    """A moto server of its own (child process) answering as account ``ACCOUNT``."""
    from localmode.embedded_aws import free_port

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"  # a file, not a pipe: the server logs every request
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_ENDPOINT_URL", "MOTO_"))}
    env["MOTO_ACCOUNT_ID"] = ACCOUNT
    with log.open("wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                   env=env, stdout=subprocess.DEVNULL, stderr=sink)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}") from exc
                time.sleep(0.1)
        yield endpoint, log
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Aws:
    """boto3 clients on the rehearsal's moto server (never the session's in-process mock)."""

    def __init__(self, endpoint: str, log: Path):
        self.endpoint, self.log, self._clients = endpoint, log, {}

    def server_error(self) -> str:
        """The moto server's last traceback (its 500s carry none)."""
        text = self.log.read_text(errors="replace")
        return text[text.rfind("Traceback"):][-3000:] if "Traceback" in text else "(no traceback in the server log)"

    def __call__(self, service: str, region: str | None = None):
        region = region or REGION
        if (service, region) not in self._clients:
            self._clients[service, region] = boto3.client(
                service, endpoint_url=self.endpoint, region_name=region,
                aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal")
        return self._clients[service, region]

    def region(self, region: str):
        """The same server, with another default region (a stack with an explicit region)."""
        return self if region == REGION else RegionalAws(self, region)


class RegionalAws:
    """``Aws`` whose default region is another one."""

    def __init__(self, aws: Aws, region: str):
        self._aws, self.region_name, self.log = aws, region, aws.log

    def __call__(self, service: str, region: str | None = None):
        return self._aws(service, region or self.region_name)

    def server_error(self) -> str:
        return self._aws.server_error()


# --- the template as moto can take it --------------------------------------------------------------

def unsupported_reason(resource_type: str) -> str | None:
    """Why moto's CloudFormation cannot create this type (an UNSUPPORTED entry), or None when it can."""
    from moto.cloudformation.parsing import get_model_map

    if resource_type.startswith("Custom::") or resource_type == "AWS::CloudFormation::CustomResource":
        return UNSUPPORTED["Custom::*"]
    if resource_type in get_model_map():
        return None
    if resource_type not in UNSUPPORTED:
        raise AssertionError(f"{resource_type} is new and moto's CloudFormation cannot create it: add it to "
                             "UNSUPPORTED (with a shim if the service API can create it) and to "
                             "docs/deploy-rehearsal.md")
    return UNSUPPORTED[resource_type]


def references(value) -> set[str]:
    """Logical ids a property value points at (Ref, Fn::GetAtt, ${...} in Fn::Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                local = set(inner[1]) if isinstance(inner, list) and len(inner) > 1 else set()
                found |= {name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text)} - local
                if isinstance(inner, list) and len(inner) > 1:
                    found |= references(inner[1])
            else:
                found |= references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= references(inner)
    return found


def depends_on(resource: dict) -> list[str]:
    value = resource.get("DependsOn", [])
    return [value] if isinstance(value, str) else list(value)


def moto_template(template: dict) -> tuple[dict, dict[str, str]]:
    """(template moto can create, {logical id: type} left out). Left out: unsupported types, and (none
    expected, asserted by the test) supported resources that reference a left-out one."""
    template = json.loads(json.dumps(template))
    resources = template["Resources"]
    left_out = {name: r["Type"] for name, r in resources.items() if unsupported_reason(r["Type"])}
    changed = True
    while changed:  # drop what references a dropped resource (DependsOn is only ordering: trimmed below)
        changed = False
        for name, resource in resources.items():
            if name not in left_out and references(resource) & set(left_out):
                left_out[name], changed = resource["Type"], True
    for name in left_out:
        del resources[name]
    for resource in resources.values():
        if "DependsOn" in resource:
            resource["DependsOn"] = [d for d in depends_on(resource) if d not in left_out]
        adapt(resource)
    template["Outputs"] = {key: output for key, output in template.get("Outputs", {}).items()
                           if not references(output) & set(left_out)}
    return template, left_out


def adapt(resource: dict) -> None:
    """ADAPTATIONS: where moto reads a property differently from CloudFormation's schema."""
    props = resource.get("Properties", {})
    if resource["Type"] == "AWS::SSM::Parameter" and isinstance(props.get("Tags"), dict):
        props["Tags"] = [{"Key": key, "Value": value} for key, value in props["Tags"].items()]
    if resource["Type"] == "AWS::StepFunctions::StateMachine" and "DefinitionSubstitutions" in props:
        # moto ignores DefinitionSubstitutions; CloudFormation substitutes them like this Fn::Sub would.
        props["DefinitionString"] = {"Fn::Sub": [props["DefinitionString"], props.pop("DefinitionSubstitutions")]}
    if resource["Type"] == "AWS::KMS::Key" and props.get("Tags"):
        # moto's create passes CloudFormation's {Key, Value} tags to the API's {TagKey, TagValue} tagger.
        props["Tags"] = [{"TagKey": tag["Key"], "TagValue": tag["Value"]} for tag in props["Tags"]]
    if resource["Type"] == "AWS::KMS::Key" and isinstance(props.get("KeyPolicy"), dict):
        # moto stores the object and its KMS API then fails to json.loads it; a JSON string is valid CFN too.
        props["KeyPolicy"] = _json_string(props["KeyPolicy"])


def _is_intrinsic(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in ("Ref", "Condition") or \
        isinstance(value, dict) and len(value) == 1 and next(iter(value)).startswith("Fn::")


def _json_string(value) -> dict:
    """A document holding intrinsics as one Fn::Join that evaluates to its JSON text."""
    parts: list = []

    def emit(item):
        if _is_intrinsic(item):
            parts.extend(['"', item, '"'])
        elif isinstance(item, dict):
            parts.append("{")
            for index, (key, inner) in enumerate(item.items()):
                parts.append(("," if index else "") + json.dumps(key) + ":")
                emit(inner)
            parts.append("}")
        elif isinstance(item, list):
            parts.append("[")
            for index, inner in enumerate(item):
                parts.append("," if index else "")
                emit(inner)
            parts.append("]")
        else:
            parts.append(json.dumps(item))

    emit(value)
    return {"Fn::Join": ["", parts]}


# --- resolving intrinsics against the created resources ----------------------------------------

class Resolver:
    """Evaluates Ref / Fn::GetAtt / Fn::Join / Fn::Sub / Fn::Select / Fn::Split as CloudFormation would,
    from the physical ids of the created stack (and of the shimmed resources)."""

    def __init__(self, aws: Aws, template: dict, stack_name: str, physical: dict[str, str], region: str = REGION):
        self.aws, self.template, self.stack_name, self.physical = aws, template, stack_name, physical
        self.region = region

    def type_of(self, logical_id: str) -> str:
        return self.template["Resources"][logical_id]["Type"]

    def ref(self, name: str):
        pseudo = {"AWS::Region": self.region, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": self.stack_name, "AWS::NoValue": None}
        if name in pseudo:
            return pseudo[name]
        if name in self.template.get("Parameters", {}):
            return self.template["Parameters"][name].get("Default")
        if name not in self.physical:
            return f"<not created: {name}>"  # a skipped resource (UNSUPPORTED); nothing can point at it
        if self.type_of(name) == "AWS::Lambda::LayerVersion":
            return self.layer_arn(name)
        return self.physical[name]

    def layer_arn(self, name: str) -> str:
        """moto ignores LayerName: find the version by its description."""
        description = self.template["Resources"][name]["Properties"].get("Description")
        arns = [layer["LatestMatchingVersion"]["LayerVersionArn"] for layer in self.aws("lambda").list_layers()["Layers"]
                if layer["LatestMatchingVersion"].get("Description") == description]
        assert len(arns) == 1, (name, arns)
        return arns[0]

    def get_att(self, name: str, attribute: str):
        kind, physical = self.type_of(name), self.ref(name)
        if name not in self.physical:
            return f"<not created: {name}.{attribute}>"
        aws = self.aws
        lookups = {
            ("AWS::IAM::Role", "Arn"): lambda: aws("iam").get_role(RoleName=physical)["Role"]["Arn"],
            ("AWS::Lambda::Function", "Arn"):
                lambda: aws("lambda").get_function(FunctionName=physical)["Configuration"]["FunctionArn"],
            ("AWS::SQS::Queue", "Arn"): lambda: aws("sqs").get_queue_attributes(
                QueueUrl=physical, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
            ("AWS::SQS::Queue", "QueueName"): lambda: physical.rsplit("/", 1)[-1],
            ("AWS::SQS::Queue", "QueueUrl"): lambda: physical,
            ("AWS::SNS::Topic", "TopicArn"): lambda: physical,
            ("AWS::SNS::Topic", "TopicName"): lambda: physical.rsplit(":", 1)[-1],
            ("AWS::DynamoDB::Table", "Arn"): lambda: aws("dynamodb").describe_table(TableName=physical)["Table"]["TableArn"],
            ("AWS::DynamoDB::Table", "StreamArn"):
                lambda: aws("dynamodb").describe_table(TableName=physical)["Table"]["LatestStreamArn"],
            ("AWS::S3::Bucket", "Arn"): lambda: f"arn:aws:s3:::{physical}",
            ("AWS::S3::Bucket", "DomainName"): lambda: f"{physical}.s3.amazonaws.com",
            ("AWS::S3::Bucket", "RegionalDomainName"): lambda: f"{physical}.s3.{self.region}.amazonaws.com",
            ("AWS::StepFunctions::StateMachine", "Arn"): lambda: physical,
            ("AWS::StepFunctions::StateMachine", "Name"): lambda: physical.rsplit(":", 1)[-1],
            ("AWS::Logs::LogGroup", "Arn"): lambda: f"arn:aws:logs:{self.region}:{ACCOUNT}:log-group:{physical}:*",
            ("AWS::Events::Rule", "Arn"): lambda: aws("events").describe_rule(Name=physical.split("|")[-1])["Arn"],
            ("AWS::Events::EventBus", "Arn"): lambda: aws("events").describe_event_bus(Name=physical)["Arn"],
            ("AWS::Events::EventBus", "Name"): lambda: physical,
            ("AWS::KMS::Key", "Arn"): lambda: aws("kms").describe_key(KeyId=physical)["KeyMetadata"]["Arn"],
            ("AWS::SSM::Parameter", "Value"): lambda: aws("ssm").get_parameter(Name=physical)["Parameter"]["Value"],
            ("AWS::CloudWatch::Alarm", "Arn"):
                lambda: aws("cloudwatch").describe_alarms(AlarmNames=[physical])["MetricAlarms"][0]["AlarmArn"],
        }
        if (kind, attribute) not in lookups:
            raise AssertionError(f"the rehearsal cannot resolve GetAtt {kind}.{attribute}: add it to Resolver.get_att")
        return lookups[(kind, attribute)]()

    def __call__(self, value):
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                name, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(name, attribute)
            if key == "Fn::Join":
                return arg[0].join(str(self(part)) for part in self(arg[1]))
            if key == "Fn::Select":
                return self(arg[1])[int(self(arg[0]))]
            if key == "Fn::Split":
                return str(self(arg[1])).split(arg[0])
            if key == "Fn::Sub":
                text, local = (arg, {}) if isinstance(arg, str) else (arg[0], self(arg[1]) if len(arg) > 1 else {})

                def sub(match):
                    name = match.group(1)
                    if name in local:
                        return str(local[name])
                    if "." in name and name.split(".")[0] in self.template["Resources"]:
                        return str(self.get_att(*name.split(".", 1)))
                    return str(self.ref(name))
                return re.sub(r"\$\{([^!}][^}]*)\}", sub, text)
            if key.startswith("Fn::"):
                raise AssertionError(f"the rehearsal does not evaluate {key}: add it to Resolver")
        return {key: self(inner) for key, inner in value.items()}


# --- shims: unsupported types applied through the service API ---------------------------------------

def _policy(document) -> str:
    return document if isinstance(document, str) else json.dumps(document)


def _shim_alarm(aws, name, props):
    props.setdefault("AlarmName", name)
    aws("cloudwatch").put_metric_alarm(**props)
    return props["AlarmName"]


def _shim_bucket_policy(aws, name, props):
    aws("s3").put_bucket_policy(Bucket=props["Bucket"], Policy=_policy(props["PolicyDocument"]))
    return props["Bucket"]


def _shim_topic_policy(aws, name, props):
    for topic in props["Topics"]:
        aws("sns").set_topic_attributes(TopicArn=topic, AttributeName="Policy",
                                        AttributeValue=_policy(props["PolicyDocument"]))
    return name


def _shim_queue_policy(aws, name, props):
    for queue in props["Queues"]:
        aws("sqs").set_queue_attributes(QueueUrl=queue, Attributes={"Policy": _policy(props["PolicyDocument"])})
    return name


def _shim_subscription(aws, name, props):
    attributes = {key: (value if isinstance(value, str) else json.dumps(value)) for key, value in props.items()
                  if key in ("FilterPolicy", "FilterPolicyScope", "RawMessageDelivery", "RedrivePolicy")}
    if "RawMessageDelivery" in attributes:
        attributes["RawMessageDelivery"] = str(props["RawMessageDelivery"]).lower()
    return aws("sns").subscribe(TopicArn=props["TopicArn"], Protocol=props["Protocol"], Endpoint=props["Endpoint"],
                                Attributes=attributes, ReturnSubscriptionArn=True)["SubscriptionArn"]


def _shim_service_linked_role(aws, name, props):
    role = aws("iam").create_service_linked_role(**props)["Role"]
    return role["RoleName"]


def _shim_event_invoke_config(aws, name, props):
    aws("lambda").put_function_event_invoke_config(**props)
    return name


def _shim_event_bus_policy(aws, name, props):
    bus = props.get("EventBusName", "default")
    if "Statement" in props:
        statement = {**props["Statement"], "Sid": props["StatementId"]}
        aws("events").put_permission(EventBusName=bus, Policy=json.dumps({"Version": "2012-10-17",
                                                                          "Statement": [statement]}))
    else:
        condition = {"Condition": props["Condition"]} if "Condition" in props else {}
        aws("events").put_permission(EventBusName=bus, Action=props["Action"], Principal=props["Principal"],
                                     StatementId=props["StatementId"], **condition)
    return props["StatementId"]


SHIMS = {
    "AWS::CloudWatch::Alarm": _shim_alarm,
    "AWS::S3::BucketPolicy": _shim_bucket_policy,
    "AWS::SNS::TopicPolicy": _shim_topic_policy,
    "AWS::SQS::QueuePolicy": _shim_queue_policy,
    "AWS::SNS::Subscription": _shim_subscription,
    "AWS::IAM::ServiceLinkedRole": _shim_service_linked_role,
    "AWS::Lambda::EventInvokeConfig": _shim_event_invoke_config,
    "AWS::Events::EventBusPolicy": _shim_event_bus_policy,
}
assert {t for t, why in UNSUPPORTED.items() if why.startswith("shim")} == set(SHIMS)


# --- the rehearsal --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rehearsal(assembly, moto_endpoint):
    """Every stack of the assembly rehearsed; returns the stage's main stack (``infra.naming.stack_name``),
    with all of them under ``"stacks"``."""
    from infra.stack import stack_name

    outdir, stacks = assembly
    aws = Aws(*moto_endpoint)
    results = [rehearse(aws.region(stack.region), outdir, stack) for stack in stacks]
    (main,) = [r for r in results if r["stack"]["StackName"] == stack_name(STAGE)]
    return {**main, "stacks": results}


def bootstrap(aws, outdir: Path, stack: SynthStack) -> list[tuple[str, str]]:
    """`cdk bootstrap` (the version parameter the template reads, the asset bucket) and the CLI's asset
    publishing, for one stack. Returns the (bucket, key) pairs published."""
    version_parameter = stack.template.get("Parameters", {}).get("BootstrapVersion", {}).get("Default")
    if version_parameter:
        aws("ssm").put_parameter(Name=version_parameter, Value="30", Type="String", Overwrite=True)
    published = []
    for asset in stack.assets["files"].values():
        source = outdir / asset["source"]["path"]
        body = _zip(source) if source.is_dir() else source.read_bytes()
        for destination in asset["destinations"].values():
            region = destination.get("region", stack.region)
            bucket = destination["bucketName"].replace("${AWS::AccountId}", ACCOUNT).replace("${AWS::Region}", region)
            s3 = aws("s3", region)
            if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
                location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
                s3.create_bucket(Bucket=bucket, **location)
            s3.put_object(Bucket=bucket, Key=destination["objectKey"], Body=body)
            published.append((bucket, destination["objectKey"]))
    return published


def rehearse(aws, outdir: Path, synth: SynthStack) -> dict:
    """Bootstrap, publish, create one stack, apply the shims, resolve every property."""
    published = bootstrap(aws, outdir, synth)
    template, name = synth.template, synth.name
    body, left_out = moto_template(template)
    try:
        aws("cloudformation").create_stack(
            StackName=name, TemplateBody=json.dumps(body), Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
            Tags=[{"Key": key, "Value": value} for key, value in synth.tags.items()])  # as `cdk deploy` passes them
    except Exception as exc:  # moto answers a failing resource with a bare 500: show its traceback
        raise AssertionError(f"create_stack {name} failed in moto: {exc}\n{aws.server_error()}") from exc
    deadline = time.monotonic() + 120
    while True:
        stack = aws("cloudformation").describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    created = aws("cloudformation").describe_stack_resources(StackName=name)["StackResources"]
    physical = {r["LogicalResourceId"]: r.get("PhysicalResourceId") for r in created}
    resolve = Resolver(aws, template, name, physical, synth.region)

    shimmed, resolved = {}, {}
    for logical_id, resource in template["Resources"].items():
        if logical_id in left_out and resource["Type"] in SHIMS:
            props = resolve(resource.get("Properties", {}))
            try:
                physical[logical_id] = SHIMS[resource["Type"]](aws, f"{name}-{logical_id}", dict(props))
            except ClientError as exc:
                raise AssertionError(f"{name} {logical_id}: {exc}\n{aws.server_error()}") from exc
            shimmed[logical_id] = resource["Type"]
    for logical_id, resource in template["Resources"].items():
        resolved[logical_id] = resolve(resource.get("Properties", {}))
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    for key, output in template.get("Outputs", {}).items():
        if key not in body["Outputs"]:  # it names a left-out resource: evaluated here, as CloudFormation would
            outputs[key] = resolve(output["Value"])
    return {"aws": aws, "synth": synth, "template": template, "stack": stack, "created": created,
            "physical": physical, "left_out": left_out, "shimmed": shimmed, "resolved": resolved, "resolve": resolve,
            "published": published, "outputs": outputs}


def _zip(directory: Path) -> bytes:
    """What the CDK CLI uploads for a directory asset (``packaging: zip``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def _of_type(rehearsal, cfn_type: str) -> list[str]:
    return [name for name, r in rehearsal["template"]["Resources"].items() if r["Type"] == cfn_type]


def chalice_function_names() -> set[str]:
    """Deployed names of the functions `chalice deploy` creates later (infra.policies lists every one)."""
    from infra.policies import FUNCTIONS

    return {workflows.function_name(function, STAGE) for function in FUNCTIONS}


# --- tests: the stack ------------------------------------------------------------------------------

def test_rehearsal_runs_in_its_own_account_not_the_session_mock(rehearsal):
    session_stacks = set()
    for result in rehearsal["stacks"]:
        region = result["synth"].region  # REGION unless the app pins the stack's environment
        assert result["stack"]["StackId"].split(":")[3:5] == [region, ACCOUNT]
        session = boto3.client("cloudformation", region_name=region).list_stacks()["StackSummaries"]
        session_stacks |= {s["StackName"] for s in session}
    assert not {r["stack"]["StackName"] for r in rehearsal["stacks"]} & session_stacks


def test_every_stack_is_created_from_the_published_assets(rehearsal):
    for result in rehearsal["stacks"]:
        stack, template = result["stack"], result["template"]
        assert stack["StackStatus"] == "CREATE_COMPLETE", (stack["StackName"], stack.get("StackStatusReason"))
        assert {r["ResourceStatus"] for r in result["created"]} == {"CREATE_COMPLETE"}, stack["StackName"]
        assert {t["Key"]: t["Value"] for t in stack.get("Tags", [])} == result["synth"].tags
        # every Code/Content an S3 key points at was published by the "CLI" step
        for name, resource in template["Resources"].items():
            for key in ("Code", "Content"):
                location = resource.get("Properties", {}).get(key)
                if isinstance(location, dict) and "S3Key" in location:
                    assert (result["resolved"][name][key]["S3Bucket"], location["S3Key"]) in result["published"], name
        # The CheckBootstrapVersion rule (moto ignores Rules): the version we bootstrapped passes it.
        for rule in template.get("Rules", {}).values():
            for assertion in rule["Assertions"]:
                condition = assertion["Assert"]
                if set(condition) == {"Fn::Not"} and "Fn::Contains" in condition["Fn::Not"][0]:
                    rejected, _ = condition["Fn::Not"][0]["Fn::Contains"]
                    assert "30" not in rejected
    assert rehearsal["published"], "the stage's stack has assets (the layer, the auto-delete provider)"


def test_exactly_the_unsupported_types_were_left_out(rehearsal):
    for result in rehearsal["stacks"]:
        template, left_out = result["template"], result["left_out"]
        created = {r["LogicalResourceId"] for r in result["created"]}
        assert created | set(left_out) == set(template["Resources"])
        assert not created & set(left_out)
        # Only the types UNSUPPORTED names: no supported resource was dropped for referencing one.
        dragged = {name: kind for name, kind in left_out.items() if unsupported_reason(kind) is None}
        assert not dragged, f"supported resources left out because they reference unsupported ones: {dragged}"
        # Everything with a service API was applied through it.
        assert set(result["shimmed"]) == {name for name, kind in left_out.items() if kind in SHIMS}
    # The stage's stack today (the list grows with alarms, queue policies... as they are added):
    assert {"AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy"} <= set(rehearsal["left_out"].values())
    assert any(kind.startswith("Custom::") for kind in rehearsal["left_out"].values())  # the bucket's auto-delete


def test_the_forwarder_stack_is_created_in_its_region_with_its_dead_letter_queue_and_alarm(rehearsal):
    """The other region's rules reach the deploy region's bus; what EventBridge cannot deliver goes to a
    dead-letter queue of that region, whose alarm notifies a topic of that region."""
    from chalicelib.settings import forwarded_event_dead_letter_queue_name
    from infra.naming import alarm_name, event_forwarder_stack_name

    (result,) = [r for r in rehearsal["stacks"]
                 if r["stack"]["StackName"] == event_forwarder_stack_name(STAGE, FORWARDED_REGION)]
    assert result["stack"]["StackId"].split(":")[3] == FORWARDED_REGION
    aws = result["aws"]
    sqs = aws("sqs")
    url = sqs.get_queue_url(QueueName=forwarded_event_dead_letter_queue_name(STAGE))["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert dlq_arn.split(":")[3] == FORWARDED_REGION
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
    rules = [r for r in result["created"] if r["ResourceType"] == "AWS::Events::Rule"]
    assert rules
    for rule in rules:
        (target,) = aws("events").list_targets_by_rule(Rule=rule["PhysicalResourceId"].split("|")[-1])["Targets"]
        assert target["Arn"] == bus and target["DeadLetterConfig"] == {"Arn": dlq_arn}
    (alarm,) = aws("cloudwatch").describe_alarms(
        AlarmNames=[alarm_name(STAGE, "events-forward-dead-lettered")])["MetricAlarms"]
    assert [a.split(":")[3] for a in alarm["AlarmActions"]] == [FORWARDED_REGION]  # a topic of its own region
    assert aws("sns").get_topic_attributes(TopicArn=alarm["AlarmActions"][0])["Attributes"]


def test_every_resource_exists_in_the_emulated_account(rehearsal):
    checked = set()
    for result in rehearsal["stacks"]:
        aws, template, physical = result["aws"], result["template"], result["physical"]
        for name, resource in template["Resources"].items():
            kind = resource["Type"]
            if name not in physical:
                assert UNSUPPORTED.get(kind, UNSUPPORTED["Custom::*"]).startswith("skip"), name
                continue
            probe = PROBES.get(kind)
            assert probe, f"no existence probe for {kind}: add one to PROBES"
            probe(aws, physical[name], result["resolved"][name], result, name)
            checked.add(kind)
    assert {"AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::SNS::Topic", "AWS::SSM::Parameter",
            "AWS::StepFunctions::StateMachine", "AWS::Logs::LogGroup", "AWS::IAM::Role"} <= checked


def _probe_table(aws, physical, props, rehearsal, name):
    assert aws("dynamodb").describe_table(TableName=physical)["Table"]["TableStatus"] == "ACTIVE"


def _probe_bucket(aws, physical, props, rehearsal, name):
    aws("s3").head_bucket(Bucket=physical)
    # moto applies only BucketName, BucketEncryption and Tags of a CloudFormation bucket (see the module doc).
    if props.get("BucketEncryption"):
        rules = aws("s3").get_bucket_encryption(Bucket=physical)["ServerSideEncryptionConfiguration"]["Rules"]
        assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == \
            [r["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
             for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]]


def _probe_bucket_policy(aws, physical, props, rehearsal, name):
    stored = json.loads(aws("s3").get_bucket_policy(Bucket=physical)["Policy"])
    assert stored["Statement"] == props["PolicyDocument"]["Statement"]


def _probe_topic(aws, physical, props, rehearsal, name):
    attributes = aws("sns").get_topic_attributes(TopicArn=physical)["Attributes"]
    assert attributes["TopicArn"] == physical


def _probe_topic_policy(aws, physical, props, rehearsal, name):
    for topic in props["Topics"]:
        policy = json.loads(aws("sns").get_topic_attributes(TopicArn=topic)["Attributes"]["Policy"])
        assert policy["Statement"] == props["PolicyDocument"]["Statement"]


def _probe_subscription(aws, physical, props, rehearsal, name):
    subscriptions = aws("sns").list_subscriptions_by_topic(TopicArn=props["TopicArn"])["Subscriptions"]
    assert any(s["SubscriptionArn"] == physical and s["Endpoint"] == props["Endpoint"] for s in subscriptions)


def _probe_parameter(aws, physical, props, rehearsal, name):
    assert aws("ssm").get_parameter(Name=physical)["Parameter"]["Value"] == props["Value"]


def _probe_role(aws, physical, props, rehearsal, name):
    aws("iam").get_role(RoleName=physical)


def _probe_iam_policy(aws, physical, props, rehearsal, name):
    for role in props.get("Roles", []):
        document = aws("iam").get_role_policy(RoleName=role, PolicyName=props["PolicyName"])["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        assert document["Statement"] == props["PolicyDocument"]["Statement"], (name, role)


def _probe_managed_policy(aws, physical, props, rehearsal, name):
    aws("iam").get_policy(PolicyArn=physical)


def _probe_function(aws, physical, props, rehearsal, name):
    configuration = aws("lambda").get_function(FunctionName=physical)["Configuration"]
    assert configuration["Role"] == props["Role"]


def _probe_layer(aws, physical, props, rehearsal, name):
    arn = rehearsal["resolve"].layer_arn(name)
    layer_name, version = arn.split(":")[-2:]
    described = aws("lambda").get_layer_version(LayerName=layer_name, VersionNumber=int(version))
    assert described["CompatibleRuntimes"] == props["CompatibleRuntimes"]


def _probe_log_group(aws, physical, props, rehearsal, name):
    groups = aws("logs").describe_log_groups(logGroupNamePrefix=physical)["logGroups"]
    (group,) = [g for g in groups if g["logGroupName"] == physical]
    assert group.get("retentionInDays") == props.get("RetentionInDays")


def _probe_state_machine(aws, physical, props, rehearsal, name):
    assert aws("stepfunctions").describe_state_machine(stateMachineArn=physical)["status"] == "ACTIVE"


def _probe_queue(aws, physical, props, rehearsal, name):
    attributes = aws("sqs").get_queue_attributes(QueueUrl=physical, AttributeNames=["All"])["Attributes"]
    if props.get("RedrivePolicy"):
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == props["RedrivePolicy"]["deadLetterTargetArn"]


def _probe_queue_policy(aws, physical, props, rehearsal, name):
    for queue in props["Queues"]:
        policy = aws("sqs").get_queue_attributes(QueueUrl=queue, AttributeNames=["Policy"])["Attributes"]["Policy"]
        assert json.loads(policy)["Statement"] == props["PolicyDocument"]["Statement"]


def _probe_rule(aws, physical, props, rehearsal, name):
    bus = props.get("EventBusName", "default")
    rule_name = physical.split("|")[-1]
    described = aws("events").describe_rule(Name=rule_name, EventBusName=bus)
    if props.get("EventPattern"):
        assert json.loads(described["EventPattern"]) == props["EventPattern"]
    targets = {t["Id"]: t for t in aws("events").list_targets_by_rule(Rule=rule_name, EventBusName=bus)["Targets"]}
    for target in props.get("Targets", []):  # target, its role, dead-letter queue and retries as declared
        actual = targets[target["Id"]]
        for key in ("Arn", "RoleArn", "DeadLetterConfig", "RetryPolicy", "Input", "InputPath"):
            if key in target:
                assert actual.get(key) == target[key], (name, target["Id"], key)


def _probe_event_bus(aws, physical, props, rehearsal, name):
    aws("events").describe_event_bus(Name=physical)


def _probe_event_bus_policy(aws, physical, props, rehearsal, name):
    policy = json.loads(aws("events").describe_event_bus(Name=props.get("EventBusName", "default"))["Policy"])
    assert physical in {statement["Sid"] for statement in policy["Statement"]}, name


def _probe_alarm(aws, physical, props, rehearsal, name):
    (alarm,) = aws("cloudwatch").describe_alarms(AlarmNames=[physical])["MetricAlarms"]
    assert alarm["AlarmActions"] == props.get("AlarmActions", [])
    assert alarm["ComparisonOperator"] == props["ComparisonOperator"]


def _probe_dashboard(aws, physical, props, rehearsal, name):
    body = json.loads(aws("cloudwatch").get_dashboard(DashboardName=physical)["DashboardBody"])
    assert body == json.loads(props["DashboardBody"])


def _probe_event_source_mapping(aws, physical, props, rehearsal, name):
    mapping = aws("lambda").get_event_source_mapping(UUID=physical)
    assert mapping["EventSourceArn"] == props["EventSourceArn"]


def _probe_permission(aws, physical, props, rehearsal, name):
    pass  # its FunctionName / SourceArn are checked by test_no_reference_dangles


def _probe_kms_key(aws, physical, props, rehearsal, name):
    assert aws("kms").describe_key(KeyId=physical)["KeyMetadata"]["Enabled"]


def _probe_service_linked_role(aws, physical, props, rehearsal, name):
    aws("iam").get_role(RoleName=physical)


def _probe_event_invoke_config(aws, physical, props, rehearsal, name):
    aws("lambda").get_function_event_invoke_config(FunctionName=props["FunctionName"],
                                                   Qualifier=props.get("Qualifier", "$LATEST"))


PROBES = {
    "AWS::DynamoDB::Table": _probe_table,
    "AWS::S3::Bucket": _probe_bucket,
    "AWS::S3::BucketPolicy": _probe_bucket_policy,
    "AWS::SNS::Topic": _probe_topic,
    "AWS::SNS::TopicPolicy": _probe_topic_policy,
    "AWS::SNS::Subscription": _probe_subscription,
    "AWS::SSM::Parameter": _probe_parameter,
    "AWS::IAM::Role": _probe_role,
    "AWS::IAM::Policy": _probe_iam_policy,
    "AWS::IAM::ManagedPolicy": _probe_managed_policy,
    "AWS::IAM::ServiceLinkedRole": _probe_service_linked_role,
    "AWS::Lambda::Function": _probe_function,
    "AWS::Lambda::LayerVersion": _probe_layer,
    "AWS::Lambda::EventSourceMapping": _probe_event_source_mapping,
    "AWS::Lambda::Permission": _probe_permission,
    "AWS::Lambda::EventInvokeConfig": _probe_event_invoke_config,
    "AWS::Logs::LogGroup": _probe_log_group,
    "AWS::StepFunctions::StateMachine": _probe_state_machine,
    "AWS::SQS::Queue": _probe_queue,
    "AWS::SQS::QueuePolicy": _probe_queue_policy,
    "AWS::Events::Rule": _probe_rule,
    "AWS::Events::EventBus": _probe_event_bus,
    "AWS::Events::EventBusPolicy": _probe_event_bus_policy,
    "AWS::CloudWatch::Alarm": _probe_alarm,
    "AWS::CloudWatch::Dashboard": _probe_dashboard,
    "AWS::KMS::Key": _probe_kms_key,
}


def test_tables_are_the_models_tables(rehearsal):
    """Named as chalicelib.tables names them for the stage, with the models' keys and indexes."""
    aws, physical = rehearsal["aws"], rehearsal["physical"]
    created = {physical[name] for name in _of_type(rehearsal, "AWS::DynamoDB::Table")}
    assert created == {model.Meta.table_name for model in ALL_TABLES}
    for model in ALL_TABLES:
        table = aws("dynamodb").describe_table(TableName=model.Meta.table_name)["Table"]
        schema = model._get_schema()
        assert sorted((k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]) == \
            sorted((k["AttributeName"], k["KeyType"]) for k in schema["key_schema"])
        assert {i["IndexName"] for i in table.get("GlobalSecondaryIndexes", [])} == \
            {i["index_name"] for i in schema.get("global_secondary_indexes", [])}
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_state_machine_calls_the_chalice_failover_functions(rehearsal):
    aws, region = rehearsal["aws"], rehearsal["synth"].region
    for name in _of_type(rehearsal, "AWS::StepFunctions::StateMachine"):
        machine = aws("stepfunctions").describe_state_machine(stateMachineArn=rehearsal["physical"][name])
        # The substituted definition is what local mode and the tests run (workflows.render), for this account.
        assert json.loads(machine["definition"]) == json.loads(workflows.render(STAGE, region, ACCOUNT))
        tasks = set(re.findall(r"arn:aws:lambda:[^\"]+", machine["definition"]))
        assert all(state.get("Type") != "Task" or re.search(r"arn:aws:lambda:", json.dumps(state))
                   for state in _states(json.loads(machine["definition"]))), "a Task that calls no function"
        expected = {workflows.function_arn(task, STAGE, region, ACCOUNT) for task in workflows.FAILOVER_TASKS.values()}
        assert tasks == expected
        assert {arn.rsplit(":", 1)[-1] for arn in tasks} <= chalice_function_names()
        # Its role exists and may invoke exactly those functions.
        props = rehearsal["resolved"][name]
        assert machine["roleArn"] == props["RoleArn"]
        role_name = machine["roleArn"].rsplit("/", 1)[-1]
        invokable = set()
        for policy_name in aws("iam").list_role_policies(RoleName=role_name)["PolicyNames"]:
            document = aws("iam").get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
            for statement in (json.loads(document) if isinstance(document, str) else document)["Statement"]:
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                if "lambda:InvokeFunction" in actions:
                    invokable |= set(statement["Resource"] if isinstance(statement["Resource"], list)
                                     else [statement["Resource"]])
        assert invokable == expected
        # Logging goes to a log group of the stack (moto drops LoggingConfiguration: checked from the template).
        for destination in props.get("LoggingConfiguration", {}).get("Destinations", []):
            arn = destination["CloudWatchLogsLogGroup"]["LogGroupArn"]
            assert _arn_exists(aws, arn), arn


def _states(definition):
    for state in definition.get("States", {}).values():
        yield state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        if "Iterator" in state or "ItemProcessor" in state:
            yield from _states(state.get("Iterator") or state["ItemProcessor"])


def test_outputs_wire_the_chalice_stage(rehearsal):
    """The outputs `make deploy` copies into .chalice/config.json name resources that exist."""
    from infra.wire_outputs import ENVIRONMENT_OUTPUTS, LAYER_OUTPUT, wire

    aws, outputs, template = rehearsal["aws"], dict(rehearsal["outputs"]), rehearsal["template"]
    assert set(outputs) == set(template.get("Outputs", {}))
    layer_output = template["Outputs"].get(LAYER_OUTPUT)
    if layer_output and not outputs[LAYER_OUTPUT].startswith("arn:"):  # moto: Ref of a layer is not its ARN
        outputs[LAYER_OUTPUT] = rehearsal["resolve"](layer_output["Value"])
    config = wire(json.loads((ROOT / ".chalice" / "config.json").read_text()), STAGE, outputs)
    environment = config["stages"][STAGE]["environment_variables"]
    for variable in ENVIRONMENT_OUTPUTS:
        value = environment[variable]
        assert _value_names_a_resource(aws, value), (variable, value)
    assert all(_arn_exists(aws, arn) for arn in config["stages"][STAGE]["lambda_functions"]["risk-scorer"]["layers"])
    # the names both sides derive from SPOT_STAGE
    assert outputs["TablePrefix"] and all(t.Meta.table_name.startswith(outputs["TablePrefix"]) for t in ALL_TABLES)
    assert outputs["AdminKeyParameter"] == get_settings().admin_key_parameter
    aws("ssm").get_parameter(Name=outputs["AdminKeyParameter"])


def test_no_reference_dangles(rehearsal):
    """Every ARN of the emulated account in any property (created, shimmed or skipped resource) or output
    names a resource that exists, or a function `chalice deploy` creates later."""
    regions = {result["synth"].region for result in rehearsal["stacks"]} | {""}
    checked, unchecked = set(), set()
    for result in rehearsal["stacks"]:
        values = list(result["resolved"].items()) + [("Outputs", result["outputs"])]
        for owner, value in values:
            for text in _strings(value):
                for arn in re.findall(r"arn:aws:[a-z0-9-]+:[a-z0-9-]*:\d*:[^\s\"',]+", text):
                    parts = arn.split(":")
                    if "*" in arn.replace(":*", "") or "${" in arn:
                        unchecked.add(arn)  # a pattern (IAM resource), not one resource
                    elif not arn.startswith("arn:aws:s3:::") and (parts[4] != ACCOUNT or parts[3] not in regions):
                        unchecked.add(arn)  # a service integration, another account or region: not rehearsed
                    else:
                        assert _arn_exists(result["aws"], arn), f"{result['stack']['StackName']} {owner}: {arn} does not exist"
                        checked.add(arn)
    assert checked, "no ARN was checked: the scan is broken"


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _strings(inner)


def _value_names_a_resource(aws, value: str) -> bool:
    """An output wired into the app's environment names something that exists: an ARN, a queue URL, a
    parameter name, a bucket or a table."""
    if value.startswith("arn:"):
        return _arn_exists(aws, value)
    lookups = [lambda: aws("s3").head_bucket(Bucket=value), lambda: aws("dynamodb").describe_table(TableName=value)]
    if value.startswith(("http://", "https://")):
        lookups = [lambda: aws("sqs").get_queue_url(QueueName=value.rstrip("/").rsplit("/", 1)[-1])]
    elif value.startswith("/"):
        lookups = [lambda: aws("ssm").get_parameter(Name=value)]
    for lookup in lookups:
        try:
            lookup()
            return True
        except ClientError:
            continue
    return False


def _arn_exists(aws, arn: str) -> bool:
    """Does the resource an ARN names exist in the emulated account (or is it a Chalice function)?"""
    arn = arn[:-2] if arn.endswith(":*") else arn
    _, _, service, region, _, resource = arn.split(":", 5)
    region = region or None  # global services (IAM, S3): the client's region
    kind, _, rest = resource.partition(":") if ":" in resource.split("/")[0] else resource.partition("/")
    try:
        if service == "lambda" and kind == "function":
            function = rest.split(":")[0]
            if function in chalice_function_names():
                return True
            aws("lambda", region).get_function(FunctionName=function)
        elif service == "lambda" and kind == "layer":
            name, version = rest.split(":")
            aws("lambda", region).get_layer_version(LayerName=name, VersionNumber=int(version))
        elif service == "sqs":
            aws("sqs", region).get_queue_url(QueueName=resource)
        elif service == "sns":
            aws("sns", region).get_topic_attributes(TopicArn=":".join(arn.split(":")[:6]))
        elif service == "states" and kind in ("stateMachine", "execution"):
            machine = rest.split(":")[0]
            aws("stepfunctions", region).describe_state_machine(
                stateMachineArn=f"arn:aws:states:{region}:{ACCOUNT}:stateMachine:{machine}")
        elif service == "dynamodb" and kind == "table":
            aws("dynamodb", region).describe_table(TableName=rest.split("/")[0])
        elif service == "logs" and kind == "log-group":
            group = rest.split(":")[0]
            groups = aws("logs", region).describe_log_groups(logGroupNamePrefix=group)["logGroups"]
            return any(g["logGroupName"] == group for g in groups)
        elif service == "iam" and resource == "root":
            return True  # the account itself (a key policy's or trust policy's principal)
        elif service == "iam" and kind == "role":
            aws("iam", region).get_role(RoleName=rest.rsplit("/", 1)[-1])
        elif service == "events" and kind == "rule":
            bus, _, rule = rest.rpartition("/")
            aws("events", region).describe_rule(Name=rule, EventBusName=bus or "default")
        elif service == "events" and kind == "event-bus":
            aws("events", region).describe_event_bus(Name=rest)
        elif service == "ssm" and kind == "parameter":
            aws("ssm", region).get_parameter(Name="/" + rest)
        elif service == "s3":
            aws("s3", region).head_bucket(Bucket=resource.split("/")[0])
        elif service == "kms" and kind == "key":
            aws("kms", region).describe_key(KeyId=rest)
        elif service == "cloudwatch" and kind == "alarm":
            alarms = aws("cloudwatch", region).describe_alarms(AlarmNames=[rest])
            return bool(alarms["MetricAlarms"] or alarms["CompositeAlarms"])
        else:
            raise AssertionError(f"the rehearsal cannot check {arn}: add its service to _arn_exists")
    except ClientError:
        return False
    return True


def test_the_checks_can_fail(rehearsal):
    """Guards the checks above against passing vacuously: a missing resource is reported missing."""
    aws = rehearsal["aws"]
    prefix = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:"
    for arn in (prefix.format("lambda") + "function:spot-optimizer-dev-no-such-function",
                prefix.format("dynamodb") + "table/spot-optimizer-dev-no-such-table",
                prefix.format("sns") + "no-such-topic",
                prefix.format("states") + "stateMachine:no-such-machine",
                prefix.format("logs") + "log-group:/no/such/group:*",
                f"arn:aws:iam::{ACCOUNT}:role/no-such-role",
                "arn:aws:s3:::no-such-bucket-rehearsal"):
        assert not _arn_exists(aws, arn), arn
    for value in ("no-such-bucket-or-table", "/no/such/parameter", "http://127.0.0.1:1/210987654321/no-such-queue"):
        assert not _value_names_a_resource(aws, value), value
    assert _value_names_a_resource(aws, rehearsal["outputs"]["ModelBucket"])
    with pytest.raises(AssertionError, match="New::Type"):
        unsupported_reason("AWS::New::Type")
    broken = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"},
                            "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"AlarmActions": [{"Ref": "Topic"}]}},
                            "Hook": {"Type": "Custom::Thing", "Properties": {"ServiceToken": "x"}},
                            "Queue": {"Type": "AWS::SQS::Queue", "DependsOn": "Hook",
                                      "Properties": {"QueueName": {"Fn::GetAtt": ["Hook", "Name"]}}}}}
    # chalice package's SQS event source (``@app.on_sqs_message(queue=...)``) resolves to the queue's ARN
    sqs_source = {"Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:spot-optimizer-dev-q"}
    assert Resolver(aws, {"Resources": {}}, "app", {})(sqs_source) == f"arn:aws:sqs:{REGION}:{ACCOUNT}:spot-optimizer-dev-q"
    body, left_out = moto_template(broken)
    assert left_out == {"Alarm": "AWS::CloudWatch::Alarm", "Hook": "Custom::Thing", "Queue": "AWS::SQS::Queue"}
    assert set(body["Resources"]) == {"Topic"}


# --- the app's side: `chalice package` against the rehearsed stack -----------------------------------
# moto's CloudFormation has no SAM transform (AWS::Serverless-2016-10-31) and the translator
# (aws-sam-translator) is not a dependency, so the app's template is not created: it is generated
# in-process from .chalice/config.json wired to the rehearsal's outputs (what `make deploy` does before
# `chalice deploy`), and its references are checked against the emulated account. Chalice's
# `pip download` step is replaced by a stand-in zip: the template does not depend on the zip's content.

@pytest.fixture(scope="module")
def sam_template(rehearsal, tmp_path_factory):
    from chalice.cli.factory import CLIFactory
    from chalice.deploy.packager import LambdaDeploymentPackager

    from infra.wire_outputs import LAYER_OUTPUT, wire

    outputs = dict(rehearsal["outputs"])
    if not outputs.get(LAYER_OUTPUT, "arn:").startswith("arn:"):  # moto: Ref of a layer is not its ARN
        outputs[LAYER_OUTPUT] = rehearsal["resolve"](rehearsal["template"]["Outputs"][LAYER_OUTPUT]["Value"])
    wired = wire(json.loads((ROOT / ".chalice" / "config.json").read_text()), STAGE, outputs)
    outdir = tmp_path_factory.mktemp("chalice-package")

    def stand_in_zip(self, project_dir, python_version, package_filename=None):
        path = outdir / "stand-in.zip"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("app.py", "# stand-in: the template does not depend on the package\n")
        return str(path)

    # environ: a copy, so the stage's environment_variables do not leak into this test process.
    factory = CLIFactory(project_dir=str(ROOT), environ={**os.environ, "AWS_DEFAULT_REGION": rehearsal["synth"].region})
    config = factory.create_config_obj(STAGE)
    config._config_from_disk = wired  # the config `make deploy` hands to chalice (wire_outputs)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LambdaDeploymentPackager, "create_deployment_package", stand_in_zip)
        packager = factory.create_app_packager(config, factory.create_package_options(), "cloudformation", "json")
        packager.package_app(config, str(outdir), STAGE)
    return json.loads((outdir / "sam.json").read_text()), wired


def _sam_functions(sam: dict) -> dict[str, dict]:
    return {name: r["Properties"] for name, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def test_sam_template_holds_every_chalice_function_with_the_stacks_environment(rehearsal, sam_template):
    from chalice.utils import to_cfn_resource_name

    from infra.policies import API_HANDLER, FUNCTIONS
    from infra.throttling import RESERVED_CONCURRENCY
    from infra.wire_outputs import ENVIRONMENT_OUTPUTS

    sam, wired = sam_template
    aws, functions = rehearsal["aws"], _sam_functions(sam)
    logical = {("APIHandler" if name == API_HANDLER else to_cfn_resource_name(name)): name for name in FUNCTIONS}
    assert set(functions) == set(logical)
    assert {to_cfn_resource_name(task) for task in workflows.FAILOVER_TASKS.values()} <= set(functions)
    for logical_id, props in functions.items():
        variables = props["Environment"]["Variables"]
        assert variables["SPOT_STAGE"] == STAGE, logical_id  # table, parameter and topic names derive from it
        for variable, output in ENVIRONMENT_OUTPUTS.items():
            assert variables[variable] == rehearsal["outputs"][output], (logical_id, variable)
            value = variables[variable]
            assert _value_names_a_resource(aws, value), (logical_id, variable, value)
        for layer in props.get("Layers", []):
            assert _arn_exists(aws, layer), (logical_id, layer)
        assert props.get("ReservedConcurrentExecutions") == RESERVED_CONCURRENCY.get(logical[logical_id]), logical_id
    assert functions[to_cfn_resource_name("risk-scorer")].get("Layers"), "the risk scorer lost its layer"
    # `chalice package` names no function (CloudFormation would generate names); the state machine, the IAM
    # patterns and the alarms assume `chalice deploy`'s `<app>-<stage>-<name>`: chalice deploy stays the path.
    assert not any("FunctionName" in props for props in functions.values())
    assert set(wired["stages"][STAGE]["lambda_functions"]) <= set(FUNCTIONS) | {API_HANDLER}


def test_sam_event_sources_point_at_the_stacks_resources(rehearsal, sam_template):
    """Schedules are well formed; an SQS source names a queue the stack created; EventBridge patterns are
    the sentinel's; any other ARN an event names exists in the emulated account."""
    sam, _ = sam_template
    aws = rehearsal["aws"]
    resolve = Resolver(aws, sam, "spot-optimizer-app", {}, rehearsal["synth"].region)
    kinds = set()
    for logical_id, props in _sam_functions(sam).items():
        for event_id, event in (props.get("Events") or {}).items():
            kinds.add(event["Type"])
            details = resolve(event.get("Properties", {}))
            if event["Type"] == "Schedule":
                assert re.fullmatch(r"rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\)",
                                    details["Schedule"]), (logical_id, details)
            elif event["Type"] == "SQS":
                assert _arn_exists(aws, details["Queue"]), (logical_id, details["Queue"])
            elif event["Type"] in ("CloudWatchEvent", "EventBridgeRule"):
                pattern = details["Pattern"]
                assert pattern.get("source") and pattern.get("detail-type"), (logical_id, pattern)
            else:
                for arn in _strings(details):
                    if arn.startswith("arn:aws:") and f":{ACCOUNT}:" in arn:
                        assert _arn_exists(aws, arn), (logical_id, event_id, arn)
    assert "Schedule" in kinds
    assert kinds & {"CloudWatchEvent", "EventBridgeRule", "SQS"}, "the sentinel has no event source"


def _sqs_consumers(rehearsal, sam: dict) -> set[str]:
    """Queue ARNs something reads: the app's SQS event sources, the stacks' event source mappings."""
    resolve = Resolver(rehearsal["aws"], sam, "spot-optimizer-app", {}, rehearsal["synth"].region)
    consumed = {resolve(event["Properties"]["Queue"]) for props in _sam_functions(sam).values()
                for event in (props.get("Events") or {}).values() if event["Type"] == "SQS"}
    for result in rehearsal["stacks"]:
        for name, resource in result["template"]["Resources"].items():
            if resource["Type"] == "AWS::Lambda::EventSourceMapping":
                consumed.add(result["resolved"][name]["EventSourceArn"])
    return consumed


def test_every_queue_a_rule_feeds_is_consumed(rehearsal, sam_template):
    """rule → queue → function: an event put in a queue nobody reads is lost. A queue that only receives what
    failed (a target's or a queue's dead-letter queue) is read by an operator (redrive), not by a function."""
    consumed = _sqs_consumers(rehearsal, sam_template[0])
    fed, dead_letter = set(), set()
    for result in rehearsal["stacks"]:
        for name, resource in result["template"]["Resources"].items():
            props = result["resolved"][name]
            if resource["Type"] == "AWS::Events::Rule":
                for target in props.get("Targets", []):
                    if target["Arn"].startswith("arn:aws:sqs:"):
                        fed.add(target["Arn"])
                    if target.get("DeadLetterConfig"):
                        dead_letter.add(target["DeadLetterConfig"]["Arn"])
            if resource["Type"] == "AWS::SQS::Queue" and props.get("RedrivePolicy"):
                dead_letter.add(props["RedrivePolicy"]["deadLetterTargetArn"])
    unread = fed - consumed - dead_letter
    assert not unread, f"queues fed by EventBridge rules that no function reads: {sorted(unread)}"
    missing = {arn for arn in consumed if not _arn_exists(rehearsal["aws"], arn)}
    assert not missing, f"event sources on queues that do not exist: {sorted(missing)}"
