"""CDK entry point of the Spot Optimizer infrastructure (one stack per stage).

Not named ``app.py``: Chalice imports the project's ``app.py`` as module ``app``.

    cd infra && ../.venv/bin/python main.py [-c stage=prod] [-c skip_layer=true]   # synth to $CDK_OUTDIR or cdk.out
    npx aws-cdk@<version> deploy -c stage=dev                                     # cdk.json runs this file

Context: ``stage`` (default ``dev``); ``skip_layer`` (``true`` synthesises without the ML layer when
``layers/ml/build`` is missing; otherwise a missing layer fails the synth: run ``make layer``);
``alarm_email`` (an address subscribed to the stage's SNS topic: alarms and failover notices, and to each
forwarder stack's alarm topic; default
``alarm_emails.<stage>`` of cdk.json, so a later deploy without ``-c`` keeps the subscription);
``nag`` (default ``true``: cdk-nag's AwsSolutions pack runs, and an unsuppressed finding fails the synth).
``event_regions`` (comma-separated regions whose EC2/Health events the sentinel needs besides the deploy
region's: one ``spot-optimizer-<stage>-events-<region>`` stack each, forwarding to the deploy region, which
is ``-c region=`` or else CDK_DEFAULT_REGION / AWS_REGION / AWS_DEFAULT_REGION).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRUE = {"1", "true", "yes", "on"}


def _cli_context(argv: list[str]) -> dict[str, str]:
    """``-c key=value`` pairs when run as ``python main.py -c ...`` (the CDK CLI passes context by env)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    context = {}
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"context must be KEY=VALUE, got {item!r}")
        context[key] = value
    return context


def _truthy(value) -> bool:
    return value is True or str(value).strip().lower() in TRUE


def event_regions(value: str, deploy_region: str | None) -> list[str]:
    """The regions of ``-c event_regions=a,b`` that need a forwarder (the deploy region needs none)."""
    regions = list(dict.fromkeys(r.strip() for r in value.split(",") if r.strip()))
    bad = [r for r in regions if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-[0-9]", r)]
    if bad:
        raise ValueError(f"event_regions: {bad} are not region names")
    if regions and not deploy_region:
        raise ValueError("event_regions needs the deploy region: -c region=<r> or AWS_REGION/CDK_DEFAULT_REGION")
    return [r for r in regions if r != deploy_region]


def add_event_forwarders(app, stage: str, value: str, deploy_region: str | None = None,
                         alarm_email: str | None = None) -> list:
    """One EventForwarderStack per extra region, forwarding to the deploy region's default bus; its
    dead-letter alarm notifies a topic of that region subscribed to ``alarm_email``."""
    import aws_cdk as cdk

    from infra.event_intake import EventForwarderStack
    from infra.naming import event_forwarder_stack_name

    deploy_region = deploy_region or (os.environ.get("CDK_DEFAULT_REGION") or os.environ.get("AWS_REGION")
                                      or os.environ.get("AWS_DEFAULT_REGION"))
    return [EventForwarderStack(app, event_forwarder_stack_name(stage, region), stage=stage,
                                deploy_region=deploy_region, alarm_email=alarm_email,
                                env=cdk.Environment(region=region))
            for region in event_regions(value, deploy_region)]


def main(argv: list[str] | None = None) -> int:
    context = _cli_context(sys.argv[1:] if argv is None else argv)
    # Deferred: aws_cdk starts a jsii (node) process on import; --help should not need it.
    import aws_cdk as cdk

    # cdk.json's context, as the CDK CLI would give it (under the CLI its own values take precedence anyway).
    defaults = json.loads((HERE / "cdk.json").read_text()).get("context", {})
    # The CDK CLI sets CDK_OUTDIR; run directly, synthesise into infra/cdk.out (not a temporary folder).
    app = cdk.App(context={**defaults, **context},
                  outdir=None if os.environ.get("CDK_OUTDIR") else str(HERE / "cdk.out"))
    stage = str(app.node.try_get_context("stage") or "dev")
    skip_layer = _truthy(app.node.try_get_context("skip_layer") or "false")

    # chalicelib computes table names, bucket and parameter names from SPOT_STAGE when first imported.
    if "chalicelib" in sys.modules and os.environ.get("SPOT_STAGE") != stage:
        raise SystemExit(f"chalicelib is already imported for SPOT_STAGE={os.environ.get('SPOT_STAGE')!r}")
    os.environ["SPOT_STAGE"] = stage
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    from infra.stack import (
        DEFAULT_LAYER_DIR,
        LayerMissingError,
        SpotOptimizerStack,
        apply_nag,
        layer_ready,
        stack_name,
    )

    if skip_layer and not layer_ready(DEFAULT_LAYER_DIR):
        print(f"warning: {DEFAULT_LAYER_DIR} is not built: synthesising WITHOUT the ML layer (skip_layer=true); "
              "run `make layer` before deploying", file=sys.stderr)
    alarm_email = str(app.node.try_get_context("alarm_email")
                      or (app.node.try_get_context("alarm_emails") or {}).get(stage) or "").strip() or None
    try:
        SpotOptimizerStack(app, stack_name(stage), stage=stage, skip_layer=skip_layer, alarm_email=alarm_email)
        add_event_forwarders(app, stage, str(app.node.try_get_context("event_regions") or ""),
                             app.node.try_get_context("region"), alarm_email)
    except (LayerMissingError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    nag = app.node.try_get_context("nag")
    if nag is None or _truthy(nag):
        apply_nag(app)
    assembly = app.synth()
    errors = [f"{message.id}: {message.entry.data}" for stack in assembly.stacks for message in stack.messages
              if message.level == cdk.cx_api.SynthesisMessageLevel.ERROR]
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
