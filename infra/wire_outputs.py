"""Write the infra stack's outputs into a stage of ``.chalice/config.json`` (step 2 of ``make deploy``).

    python infra/wire_outputs.py --stage dev --outputs build/cdk-outputs-dev.json [--config .chalice/config.json]
    python infra/wire_outputs.py --stage dev --check      # only: does the stage exist in the config?
    python infra/wire_outputs.py ... --region us-east-1   # also: the stack is in Chalice's region (make deploy)

``--outputs`` is the file ``cdk deploy --outputs-file`` writes: ``{"<stack>": {"<OutputKey>": value}}``.
Sets, for that stage only: environment_variables FAILOVER_STATE_MACHINE_ARN, NOTIFICATION_TOPIC_ARN and
MODEL_BUCKET, and ``lambda_functions.risk-scorer.layers`` = [LayerArn] (the only function with the ML
layer). Everything else in the file is kept as it is. Light on purpose: no aws_cdk import.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra.naming import RISK_SCORER_FUNCTION, stack_name  # noqa: E402

# Chalice environment variable ← CloudFormation output of the infra stack.
ENVIRONMENT_OUTPUTS = {
    "FAILOVER_STATE_MACHINE_ARN": "StateMachineArn",
    "NOTIFICATION_TOPIC_ARN": "NotificationTopicArn",
    "MODEL_BUCKET": "ModelBucket",
}
LAYER_OUTPUT = "LayerArn"
REGION_OUTPUT = "Region"


class WiringError(Exception):
    """The outputs or the config do not fit together; nothing was written."""


def stack_outputs(outputs: dict, stage: str) -> dict[str, str]:
    """The outputs of this stage's stack from a ``--outputs-file`` document."""
    name = stack_name(stage)
    if name not in outputs:
        raise WiringError(f"no outputs for stack {name!r} (found {sorted(outputs)}): did `cdk deploy` run for "
                          f"stage {stage!r}?")
    return outputs[name]


def check_stage(config: dict, stage: str) -> dict:
    stages = config.get("stages", {})
    if stage not in stages:
        raise WiringError(f"stage {stage!r} is not in .chalice/config.json (stages: {sorted(stages)})")
    return stages[stage]


def wire(config: dict, stage: str, outputs: dict[str, str]) -> dict:
    """A copy of ``config`` with the stage wired to ``outputs`` (one stack's outputs)."""
    config = json.loads(json.dumps(config))
    stage_config = check_stage(config, stage)
    missing = [key for key in (*ENVIRONMENT_OUTPUTS.values(), LAYER_OUTPUT) if not outputs.get(key)]
    if missing:
        hint = " (LayerArn: run `make layer`, then deploy the stack again)" if LAYER_OUTPUT in missing else ""
        raise WiringError(f"stack outputs lack {missing}{hint}")
    environment = stage_config.setdefault("environment_variables", {})
    for variable, key in ENVIRONMENT_OUTPUTS.items():
        environment[variable] = outputs[key]
    function = stage_config.setdefault("lambda_functions", {}).setdefault(RISK_SCORER_FUNCTION, {})
    function["layers"] = [outputs[LAYER_OUTPUT]]
    return config


def check_region(outputs: dict[str, str], region: str) -> None:
    """The stack was deployed where Chalice is about to deploy the app."""
    if outputs.get(REGION_OUTPUT) != region:
        raise WiringError(f"the stack is in {outputs.get(REGION_OUTPUT)!r} but Chalice deploys to {region!r}: "
                          "set AWS_REGION and AWS_DEFAULT_REGION to the same region")


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if path.exists():
            shutil.copymode(path, tmp)  # mkstemp files are 0600
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True)
    parser.add_argument("--outputs", type=Path, help="file written by `cdk deploy --outputs-file`")
    parser.add_argument("--config", type=Path, default=ROOT / ".chalice" / "config.json")
    parser.add_argument("--check", action="store_true", help="only check that the stage exists in --config")
    parser.add_argument("--region", help="refuse unless the stack's Region output is this (Chalice's region)")
    args = parser.parse_args(argv)
    try:
        config = json.loads(args.config.read_text())
        if args.check:
            check_stage(config, args.stage)
            return 0
        if args.outputs is None:
            parser.error("--outputs is required (unless --check)")
        outputs = stack_outputs(json.loads(args.outputs.read_text()), args.stage)
        if args.region is not None:
            check_region(outputs, args.region)
        wired = wire(config, args.stage, outputs)
    except (WiringError, OSError, json.JSONDecodeError) as exc:
        print(f"wire_outputs: {exc}", file=sys.stderr)
        return 1
    _write_atomically(args.config, json.dumps(wired, indent=2) + "\n")
    environment = wired["stages"][args.stage]["environment_variables"]
    print(f"wired stage {args.stage!r} in {args.config}:")
    for variable in ENVIRONMENT_OUTPUTS:
        print(f"  {variable}={environment[variable]}")
    print(f"  lambda_functions.{RISK_SCORER_FUNCTION}.layers={wired['stages'][args.stage]['lambda_functions'][RISK_SCORER_FUNCTION]['layers']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
