"""Deploy-time guards and Chalice's shared deployed state (used by ``make deploy`` / ``make destroy``).

    python infra/deploy_state.py preflight --stage dev [--destroy]   # region agreement; prod destroy needs CONFIRM=yes
    python infra/deploy_state.py region                              # the region Chalice (botocore) deploys to
    python infra/deploy_state.py pull --stage dev [--outputs build/cdk-outputs-dev.json]
    python infra/deploy_state.py push --stage dev [--outputs ...]
    python infra/deploy_state.py api-log-retention --stage dev      # after chalice deploy (Chalice gets it wrong)

* **Region check.** The CDK CLI takes its region from ``AWS_REGION``, then ``AWS_DEFAULT_REGION``, then the
  profile; Chalice (botocore) from ``AWS_DEFAULT_REGION``, then the profile. A stack in one region and the
  app in another would deploy fine and never work: ``preflight`` refuses when they differ, and
  ``wire_outputs.py --region`` refuses when the stack's ``Region`` output is not Chalice's region.
* **One region per stage.** ``preflight`` also refuses a stage whose infra stack exists in another region of the
  account (``check_single_region``): Chalice's function roles are named for the stage only and IAM is global,
  so two regions would share them and a destroy of either would delete the other's.
* **Shared deployed state.** Chalice records what it deployed in ``.chalice/deployed/<stage>.json``; a clone
  without that file creates a second API. ``pull`` copies the stage's copy from its model bucket
  (``chalice/deployed/<stage>.json``) before ``chalice deploy``/``delete``; ``push`` stores it back after,
  conditionally on the version pulled (S3 ``If-Match``; ``If-None-Match: *`` for the first one), so two
  people deploying the same stage at once cannot silently overwrite each other's record: the second push
  fails and says so. The first ``pull`` where the bucket has no copy keeps the local file (it is pushed).
* **The API handler's log retention.** Chalice 1.34 names the API handler's log group after
  ``<app>-<stage>-api_handler`` while the function is ``<app>-<stage>``: ``api-log-retention`` sets the
  stage's retention on the real group (creating it if the function never logged yet).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.naming import PROD_STAGES, deployed_state_key, log_retention_days, stack_name  # noqa: E402
from infra.policies import API_HANDLER, deployed_function_name  # noqa: E402

BUCKET_OUTPUT = "ModelBucket"
ABSENT = "absent"  # the bucket had no copy when we pulled: push only if it still has none


class DeployStateError(Exception):
    """A guard refused, or the shared state could not be read or written; nothing was changed."""


def chalice_region() -> str | None:
    """The region ``chalice deploy`` uses (botocore: AWS_DEFAULT_REGION, then the profile's)."""
    import botocore.session

    return botocore.session.Session(profile=os.environ.get("AWS_PROFILE") or None).get_config_variable("region")


def cdk_region() -> str | None:
    """The region the CDK CLI deploys to (AWS_REGION, then AWS_DEFAULT_REGION, then the profile's)."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or chalice_region()


def preflight(stage: str, *, destroy: bool = False, confirm: str | None = None) -> str:
    """The deploy region, once CDK and Chalice agree on it (and a prod destroy is confirmed)."""
    if destroy and stage in PROD_STAGES and confirm != "yes":
        raise DeployStateError(f"refusing to destroy {stage!r} without CONFIRM=yes (its tables and bucket are "
                               "retained anyway: see infra/README.md)")
    cdk, chalice = cdk_region(), chalice_region()
    if not cdk or not chalice:
        raise DeployStateError("no AWS region: set AWS_REGION and AWS_DEFAULT_REGION (to the same region) or the "
                               "profile's region")
    if cdk != chalice:
        raise DeployStateError(f"CDK would deploy to {cdk} (AWS_REGION) but Chalice to {chalice} "
                               "(AWS_DEFAULT_REGION/profile): set both to the same region")
    return cdk


def regions_with_stage(stage: str, deploy_region: str, session=None) -> list[str]:
    """The account's other enabled regions where the stage's infra stack exists (``stack_name``; the forwarder
    stacks are named otherwise). A region the caller may not look into (an SCP denying it) is skipped with a
    warning."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    session = session or boto3.session.Session()
    regions = {r["RegionName"] for r in session.client("ec2", region_name=deploy_region).describe_regions()["Regions"]}
    found = []
    for region in sorted(regions - {deploy_region}):
        try:
            session.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name(stage))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ValidationError":  # ValidationError: no such stack
                print(f"deploy_state: warning: could not look for {stack_name(stage)} in {region} "
                      f"({exc.response.get('Error', {}).get('Code')})", file=sys.stderr)
            continue
        except BotoCoreError as exc:
            print(f"deploy_state: warning: could not look for {stack_name(stage)} in {region} ({exc})", file=sys.stderr)
            continue
        found.append(region)
    return found


def check_single_region(stage: str, region: str, *, destroy: bool = False, confirm: str | None = None,
                        session=None) -> None:
    """Refuse a stage already deployed in another region of the account. Chalice names every function's role
    ``spot-optimizer-<stage>-<function>`` and IAM is global: a second region's ``chalice deploy`` silently adopts
    the first one's roles, and ``chalice delete`` in either region deletes the roles the other's functions run
    with. A destroy goes ahead with CONFIRM=yes (the other region's next ``make deploy`` recreates the roles)."""
    others = regions_with_stage(stage, region, session)
    if not others or (destroy and confirm == "yes"):
        return
    action = ("`chalice delete` here would delete the IAM roles its functions run with (CONFIRM=yes to destroy anyway; "
              "then run `make deploy` there to recreate them)" if destroy else
              "a deploy here would share its Chalice IAM roles (spot-optimizer-<stage>-<function>, global in an "
              "account), and destroying either region would delete the other's; deploy another stage name here")
    raise DeployStateError(f"stage {stage!r} is also deployed in {', '.join(others)} of this account: {action}")


def _etag_file(stage: str, project: Path) -> Path:
    return project / "build" / f"deployed-{stage}.etag"


def _state_file(stage: str, project: Path) -> Path:
    return project / ".chalice" / "deployed" / f"{stage}.json"


def bucket_for(stage: str, outputs: Path | None, cloudformation=None) -> str:
    """The stage's model bucket: from a ``cdk deploy --outputs-file`` document, else from the stack."""
    if outputs is not None and outputs.exists():
        found = json.loads(outputs.read_text()).get(stack_name(stage), {}).get(BUCKET_OUTPUT)
        if found:
            return found
    if cloudformation is None:
        import boto3

        cloudformation = boto3.client("cloudformation")
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name(stage))["Stacks"]
    except Exception as exc:  # botocore ClientError: the stack does not exist
        raise DeployStateError(f"stack {stack_name(stage)} not found ({exc}): deploy the infra stack first") from exc
    for output in stacks[0].get("Outputs", []):
        if output["OutputKey"] == BUCKET_OUTPUT:
            return output["OutputValue"]
    raise DeployStateError(f"stack {stack_name(stage)} has no {BUCKET_OUTPUT} output")


def pull(s3, bucket: str, stage: str, project: Path = ROOT) -> str:
    """Copy the shared state over the local file; remember the version pulled. Returns what happened."""
    state, etag_file = _state_file(stage, project), _etag_file(stage, project)
    etag_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        found = s3.get_object(Bucket=bucket, Key=deployed_state_key(stage))
    except s3.exceptions.NoSuchKey:
        etag_file.write_text(ABSENT)
        return ("no shared state yet: the local file will be pushed" if state.exists()
                else "no shared state yet: first deploy of this stage")
    body = found["Body"].read()
    json.loads(body)  # refuse to write a corrupt copy over the local file
    state.parent.mkdir(parents=True, exist_ok=True)
    if state.exists() and state.read_bytes() != body:
        backup = state.with_name(f"{stage}.json.local-backup")
        backup.write_bytes(state.read_bytes())
        note = f" (the differing local file was kept as {backup.name})"
    else:
        note = ""
    state.write_bytes(body)
    etag_file.write_text(found["ETag"])
    return f"pulled s3://{bucket}/{deployed_state_key(stage)}{note}"


def push(s3, bucket: str, stage: str, project: Path = ROOT) -> str:
    """Store the local state, only over the version pulled (nobody pushed in between)."""
    from botocore.exceptions import ClientError

    state, etag_file = _state_file(stage, project), _etag_file(stage, project)
    if not state.exists():
        return "no local state to push"
    if not etag_file.exists():
        raise DeployStateError(f"push without a pull: run `python infra/deploy_state.py pull --stage {stage}` first")
    pulled = etag_file.read_text().strip()
    condition = {"IfNoneMatch": "*"} if pulled == ABSENT else {"IfMatch": pulled}
    body = state.read_bytes()
    json.loads(body)
    try:
        written = s3.put_object(Bucket=bucket, Key=deployed_state_key(stage), Body=body,
                                ContentType="application/json", **condition)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise DeployStateError(
                f"someone else deployed stage {stage!r} since this deploy pulled its state: the shared copy was "
                "NOT overwritten; run `make deploy` again (it pulls theirs first)") from exc
        raise
    etag_file.write_text(written["ETag"])
    return f"pushed s3://{bucket}/{deployed_state_key(stage)}"


def api_log_retention(logs, stage: str) -> str:
    """Give the API handler's log group the stage's retention (log_retention_days)."""
    group = f"/aws/lambda/{deployed_function_name(API_HANDLER, stage)}"
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    days = log_retention_days(stage)
    logs.put_retention_policy(logGroupName=group, retentionInDays=days)
    return f"{group}: logs kept {days} days"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("preflight", "region", "pull", "push", "api-log-retention"))
    parser.add_argument("--stage")
    parser.add_argument("--destroy", action="store_true", help="preflight of `make destroy`")
    parser.add_argument("--outputs", type=Path, help="file written by `cdk deploy --outputs-file`")
    args = parser.parse_args(argv)
    if args.command != "region" and not args.stage:
        parser.error("--stage is required")
    try:
        if args.command == "region":
            print(chalice_region() or "")
            return 0
        if args.command == "preflight":
            region = preflight(args.stage, destroy=args.destroy, confirm=os.environ.get("CONFIRM"))
            check_single_region(args.stage, region, destroy=args.destroy, confirm=os.environ.get("CONFIRM"))
            print(f"stage {args.stage}: CDK and Chalice both target {region}")
            return 0
        import boto3

        if args.command == "api-log-retention":
            print(api_log_retention(boto3.client("logs"), args.stage))
            return 0
        s3 = boto3.client("s3")
        bucket = bucket_for(args.stage, args.outputs)
        print((pull if args.command == "pull" else push)(s3, bucket, args.stage))
    except DeployStateError as exc:
        print(f"deploy_state: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
