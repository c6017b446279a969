"""Deploy-level throttling, in one place: API Gateway stage limits and Lambda reserved concurrency.

    python infra/throttling.py --stage dev [--region us-east-1]    # after `chalice deploy` (make deploy)

* **Stage throttling.** Chalice cannot set it, so ``make deploy`` runs this after ``chalice deploy``: it reads
  the REST API id Chalice recorded in ``.chalice/deployed/<stage>.json`` and sets the default method
  throttling (``/*/*/throttling/rateLimit`` and ``burstLimit``) of the API's stage (``api_gateway_stage``
  in ``.chalice/config.json``). Requests over it get API Gateway's 429 before any Lambda runs.
* **Reserved concurrency.** ``RESERVED_CONCURRENCY`` is written into ``.chalice/config.json``
  (``lambda_functions.<name>.reserved_concurrency``) by ``python -m infra.chalice_policies``: the sentinel, the
  decision-worker, the savings-worker and the failover steps always have room to run when the API is flooded, and cannot flood the
  account either.
  The account must keep 100 unreserved executions: the sum below needs an account limit of at least
  100 + sum (new accounts with a limit of 10 must ask for the default 1000 first).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.settings import (  # noqa: E402
    DECISION_WORKER_CONCURRENCY,
    DECISION_WORKER_FUNCTION,
    SAVINGS_WORKER_CONCURRENCY,
    SAVINGS_WORKER_FUNCTION,
    SENTINEL_CONCURRENCY,
    SENTINEL_FUNCTION,
)
from chalicelib.workflows import FAILOVER_TASKS  # noqa: E402
from infra.chalice_deployment import NotDeployed, api_gateway_stage, post_deploy_args, rest_api_id  # noqa: E402

# Lambda keeps this many executions of the account unreserved: the account limit must be at least this plus
# every deployed stage's RESERVED_CONCURRENCY (infra/README.md states the numbers; a test checks them).
UNRESERVED_MINIMUM = 100
# A reclaimed pool interrupts many instances at once: the sentinel gets 30 (= the maximum concurrency of its
# SQS event source mapping, app.py, so the poller is never throttled), each failover step 25: when a zone
# drains, the executions the sentinel started arrive at the same step together (50 in the load bench); 25 at
# a time, each call ~1 s, the rest are served within the ASL's throttle retries (1 + 2 + 4 + 8 s); 5 a step
# would leave 45 of them to those 15 s of retries.
FAILOVER_STEP_CONCURRENCY = 25
# The fan-out workers, like the sentinel, reserve what their mapping may use (a fleet's worth of decisions or
# roll-ups neither waits behind a flooded API nor floods the account).
RESERVED_CONCURRENCY: dict[str, int] = {
    SENTINEL_FUNCTION: SENTINEL_CONCURRENCY,
    DECISION_WORKER_FUNCTION: DECISION_WORKER_CONCURRENCY,
    SAVINGS_WORKER_FUNCTION: SAVINGS_WORKER_CONCURRENCY,
    **{name: FAILOVER_STEP_CONCURRENCY for name in FAILOVER_TASKS.values()},
}


@dataclass(frozen=True)
class StageLimits:
    rate_limit: float  # steady requests per second, for the whole stage
    burst_limit: int  # token bucket size


API_STAGE_LIMITS = {"dev": StageLimits(rate_limit=20, burst_limit=40),
                    "prod": StageLimits(rate_limit=200, burst_limit=400)}


class ThrottlingError(Exception):
    """Nothing to throttle: the stage's limits are unknown."""


def patch_operations(limits: StageLimits) -> list[dict]:
    return [{"op": "replace", "path": "/*/*/throttling/rateLimit", "value": str(limits.rate_limit)},
            {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": str(limits.burst_limit)}]


def apply(client, api_id: str, api_stage: str, limits: StageLimits) -> dict:
    """Set the stage's default method throttling; returns the ``*/*`` method settings AWS reports."""
    client.update_stage(restApiId=api_id, stageName=api_stage, patchOperations=patch_operations(limits))
    return client.get_stage(restApiId=api_id, stageName=api_stage).get("methodSettings", {}).get("*/*", {})


def main(argv: list[str] | None = None) -> int:
    args = post_deploy_args(__doc__.splitlines()[0], argv)
    import boto3

    try:
        if args.stage not in API_STAGE_LIMITS:
            raise ThrottlingError(f"no API limits for stage {args.stage!r} (infra/throttling.py API_STAGE_LIMITS)")
        limits = API_STAGE_LIMITS[args.stage]
        api_id, api_stage = rest_api_id(args.stage, args.project), api_gateway_stage(args.stage, args.project)
    except (ThrottlingError, NotDeployed) as exc:
        print(f"throttling: {exc}", file=sys.stderr)
        return 1
    settings = apply(boto3.client("apigateway", region_name=args.region), api_id, api_stage, limits)
    print(f"API {api_id} stage {api_stage!r}: rate {settings.get('throttlingRateLimit')}/s, "
          f"burst {settings.get('throttlingBurstLimit')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
