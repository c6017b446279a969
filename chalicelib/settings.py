"""Runtime settings read once from the environment.

Chalice applies each stage's ``environment_variables`` from ``.chalice/config.json``; infra/ outputs
(table prefix, parameter names) land there before ``chalice deploy``. Nothing here talks to AWS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

APP_NAME = "spot-optimizer"
# The account part of the model bucket's name where no stack output was wired (local mode, tests).
UNWIRED_ACCOUNT = "local"

# The sentinel: one ``@app.on_sqs_message`` function consuming the stage's event queue (EventBridge rules →
# SQS → Lambda, infra/event_intake.py). Ten events per invocation at most, no batching window (a warning
# gives two minutes); at most SENTINEL_CONCURRENCY invocations at once (the event source mapping's maximum
# concurrency and the function's reserved concurrency, infra/throttling.py: equal, so the queue's poller is
# never throttled and no message is returned to the queue, or sent to the dead-letter queue, for throttling).
SENTINEL_FUNCTION = "sentinel"
SENTINEL_BATCH_SIZE = 10
SENTINEL_CONCURRENCY = 30

# The decision cycle fans out: the scheduled ``decision-cycle`` (the dispatcher) sends the live agents' keys to
# the stage's decision queue, and ``decision-worker`` (``@app.on_sqs_message``, chalicelib/jobs/decision_cycle.py)
# decides for them. Five messages per invocation (5 × 25 agents × ~43 ms ≈ 5 s, well inside its 30 s timeout);
# at most DECISION_WORKER_CONCURRENCY invocations at once (the mapping's maximum concurrency and the function's
# reserved concurrency, equal as for the sentinel): 100,000 agents are decided in ≈ 4,600 s / 25 ≈ 3 minutes,
# inside the 5-minute cycle, without letting a large fleet take the account's concurrency or DynamoDB's burst.
DECISION_WORKER_FUNCTION = "decision-worker"
DECISION_WORKER_BATCH_SIZE = 5
DECISION_WORKER_CONCURRENCY = 25

# The savings roll-up fans out the same way: ``savings-rollup`` (:00) and ``savings-close`` (00:15) send the clients'
# ids to the stage's savings queue, 10 a message, and ``savings-worker`` (chalicelib/jobs/savings_rollup.py) rolls
# them up. One message per invocation (a client ≈ 0.13 s + 27 ms per agent, `python -m bench.cost`: 10 clients of
# the default 50-agent quota ≈ 20 s, a single 1,000-agent client ≈ 28 s, inside its 120 s timeout); at most
# SAVINGS_WORKER_CONCURRENCY at once (mapping and reserved concurrency, equal): 100,000 agents in clients of 10
# (≈ 4,000 s of work) are rolled up in ≈ 7 minutes, long before the fleet job at :45 sums them, without taking
# DynamoDB's burst from the API.
SAVINGS_WORKER_FUNCTION = "savings-worker"
SAVINGS_WORKER_BATCH_SIZE = 1
SAVINGS_WORKER_CONCURRENCY = 10


@dataclass(frozen=True)
class Settings:
    """Every tunable the handlers read, with production defaults."""

    stage: str
    region: str
    table_prefix: str
    admin_key_parameter: str
    max_body_bytes: int
    price_retention_days: int
    report_retention_days: int
    event_retention_days: int
    notification_retention_days: int
    command_lease_seconds: int
    command_max_attempts: int
    command_retention_days: int
    default_page_size: int
    max_page_size: int
    model_bucket: str
    decision_retention_days: int
    risk_horizon_s: int
    failover_state_machine_arn: str
    signal_window_s: int
    prewarm_ttl_s: int
    prewarm_risk_threshold: float
    orphan_grace_s: int
    notification_topic_arn: str
    server_price_fresh_s: int
    price_backfill_s: int
    placement_scores_source: str
    ondemand_prices_source: str
    ondemand_prices_file: str
    placement_scores_file: str
    placement_interval_s: int
    placement_max_per_run: int
    spot_prices_max_per_run: int
    observation_retention_days: int = 14
    rate_limit_per_window: int = 1200
    rate_limit_per_agent: int = 20
    risk_scorer_max_pools: int = 2000
    decision_record_max_pools: int = 40
    rate_limit_window_s: int = 60
    tenancy: str = "assume-role"
    home_account_id: str = ""
    quota_max_agents: int = 50
    quota_max_deleted_agents: int = 1000
    quota_max_instances: int = 20
    quota_max_standby_usd_per_hour: float = 20.0
    quota_max_queued_commands: int = 10
    quota_max_switches_per_agent_per_day: int = 24
    max_instance_vcpus: int = 64
    price_rollup_lookback_hours: int = 26
    price_rollup_backfill_hours: int = 72
    price_rollup_max_pools: int = 2000
    price_rollup_max_points: int = 20000
    price_agent_carry_s: int = 6 * 3600
    price_hourly_retention_days: int = 92
    price_daily_retention_days: int = 400
    price_raw_retention_days: int = 14
    notification_read_retention_days: int = 7
    agent_retention_days: int = 90
    cleaner_max_clients: int = 200
    cleaner_max_agents: int = 10_000
    cleaner_max_deletes: int = 5000

    @property
    def local(self) -> bool:
        """True when running against the embedded AWS of local mode."""
        return self.stage == "local"


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@cache
def get_settings() -> Settings:
    """Build the settings from the environment once per container."""
    stage = os.environ.get("SPOT_STAGE", "dev")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return Settings(
        stage=stage,
        region=region,
        table_prefix=table_prefix(),
        admin_key_parameter=os.environ.get("ADMIN_KEY_PARAMETER", admin_key_parameter_name(stage)),
        max_body_bytes=_int("MAX_BODY_BYTES", 256 * 1024),
        price_retention_days=_int("PRICE_RETENTION_DAYS", 90),
        report_retention_days=_int("REPORT_RETENTION_DAYS", 30),
        event_retention_days=_int("EVENT_RETENTION_DAYS", 90),
        notification_retention_days=_int("NOTIFICATION_RETENTION_DAYS", 30),
        command_lease_seconds=_int("COMMAND_LEASE_SECONDS", 300),
        command_max_attempts=_int("COMMAND_MAX_ATTEMPTS", 3),
        command_retention_days=_int("COMMAND_RETENTION_DAYS", 7),
        default_page_size=_int("DEFAULT_PAGE_SIZE", 50),
        max_page_size=_int("MAX_PAGE_SIZE", 200),
        # Deployed stages get the stack's ModelBucket output (infra/wire_outputs.py); local mode and tests,
        # which create the bucket themselves, use the name with a placeholder account.
        model_bucket=os.environ.get("MODEL_BUCKET") or model_bucket_name(stage, UNWIRED_ACCOUNT, region),
        decision_retention_days=_int("DECISION_RETENTION_DAYS", 90),
        risk_horizon_s=_int("RISK_HORIZON_S", 3600),
        # Set by `make deploy` from infra's output; tests and local mode set it when they create it.
        failover_state_machine_arn=os.environ.get("FAILOVER_STATE_MACHINE_ARN", ""),
        # One workflow per (instance, signal) within this window (the legacy server's 15 minutes).
        signal_window_s=_int("SIGNAL_WINDOW_S", 900),
        # A standby pre-warmed on a rebalance recommendation expires if no termination follows.
        prewarm_ttl_s=_int("PREWARM_TTL_S", 3600),
        prewarm_risk_threshold=float(os.environ.get("PREWARM_RISK_THRESHOLD", "0.30")),
        # Instances tagged as ours but unknown to the tables are left alone this long (launch → attach).
        orphan_grace_s=_int("ORPHAN_GRACE_S", 600),
        notification_topic_arn=os.environ.get("NOTIFICATION_TOPIC_ARN", ""),
        # Capacity observations feed the back-off (≤ 6 h window) and the risk features: 14 days.
        observation_retention_days=_int("OBSERVATION_RETENTION_DAYS", 14),
        # A pool priced by the spot-prices job (every 10 min) keeps that price against agent reports
        # this long after the job last confirmed it; after that (job failing) agent reports count again.
        server_price_fresh_s=_int("SERVER_PRICE_FRESH_S", 1800),
        # The spot-prices job never asks for history older than this (first run: 1 h).
        price_backfill_s=_int("PRICE_BACKFILL_S", 86400),
        # Placement scores: "aws" (GetSpotPlacementScores), "file" (a JSON file, local mode and tests)
        # or "off". Local mode has no AWS to ask: "file" when PLACEMENT_SCORES_FILE is set, else "off".
        placement_scores_source=os.environ.get(
            "PLACEMENT_SCORES_SOURCE",
            "aws" if stage != "local" else ("file" if os.environ.get("PLACEMENT_SCORES_FILE") else "off")),
        placement_scores_file=os.environ.get("PLACEMENT_SCORES_FILE", ""),
        # On-demand list prices per region: "aws" (the Price List API), "file" (a JSON file {region: {type: price}},
        # local mode and tests) or "off" (the catalogue's us-east-1 prices everywhere). Asked once a day per
        # (region, type) in use, by the spot-prices job.
        ondemand_prices_source=os.environ.get(
            "ONDEMAND_PRICES_SOURCE",
            "aws" if stage != "local" else ("file" if os.environ.get("ONDEMAND_PRICES_FILE") else "off")),
        ondemand_prices_file=os.environ.get("ONDEMAND_PRICES_FILE", ""),
        # Each (region, type) is asked at most once per interval, and at most this many per run
        # (AWS limits new request configurations per 24 h: chalicelib/aws/spot_market.py).
        placement_interval_s=_int("PLACEMENT_INTERVAL_S", 6 * 3600),
        placement_max_per_run=_int("PLACEMENT_MAX_PER_RUN", 10),
        # The spot-prices job asks at most this many (region, type) a run, the longest unasked first: each is one
        # DescribeSpotPriceHistory (≥ 1 page, ≈ 0.1-0.3 s from another region) and a pool write per zone, so 200
        # stay well inside the job's 120 s whatever the tenants declare (50 agents × 20 types each); a larger set
        # is priced in turns, never some (region, type) never again.
        spot_prices_max_per_run=_int("SPOT_PRICES_MAX_PER_RUN", 200),
        # Per-client API rate limit (chalicelib/rate_limit.py): requests per window; an admin can set a
        # client's own limit (clients.rate_limit_per_window). Local mode's demo replays days of a fleet
        # in minutes through one client, so its default is far higher (the same code path still runs).
        rate_limit_per_window=_int("RATE_LIMIT_PER_WINDOW", 1200 if stage != "local" else 100_000),
        rate_limit_window_s=_int("RATE_LIMIT_WINDOW_S", 60),
        # ... and it grows with the fleet a client may run: at least this many requests per window for each agent
        # its max_agents quota allows (rate_limit.limit_for). The legacy v4 agent alone makes about 9 a minute
        # (heartbeat every 30 s, config every 60 s, commands every 15 s, replicas every 30 s, prices every 5 min):
        # a quota raised to 200 agents would otherwise have its legacy fleet refused (429) at random, switch
        # reports and command results included, which that agent never sends again.
        rate_limit_per_agent=_int("RATE_LIMIT_PER_AGENT", 20),
        # The risk scorer reads only the pools agents run or may run on, at most this many per run.
        risk_scorer_max_pools=_int("RISK_SCORER_MAX_POOLS", 2000),
        # A decision item stores at most this many candidate pools (and how many it left out).
        decision_record_max_pools=_int("DECISION_RECORD_MAX_POOLS", 40),
        # "assume-role": act in each client's bound account through its role (chalicelib/aws/accounts.py);
        # "self-hosted": one account, the product's own credentials (default in local mode).
        tenancy=os.environ.get("SPOT_TENANCY", "self-hosted" if stage == "local" else "assume-role"),
        home_account_id=os.environ.get("SPOT_HOME_ACCOUNT_ID", ""),
        # Per-client quotas (admin-overridable per client, chalicelib/quotas.py): agents, live instances the
        # product launched, and standby $/h.
        quota_max_agents=_int("QUOTA_MAX_AGENTS", 50),
        # Deleted agents a client may keep (their rows stay AGENT_RETENTION_DAYS for their history) before a new
        # agent id is refused: without it, register + delete would grow the client's partition, which
        # registration, the overview and the histories read whole, and the data cleaner's shared budget.
        quota_max_deleted_agents=_int("QUOTA_MAX_DELETED_AGENTS", 1000),
        quota_max_instances=_int("QUOTA_MAX_INSTANCES", 20),
        quota_max_standby_usd_per_hour=float(os.environ.get("QUOTA_MAX_STANDBY_USD_PER_HOUR", "20")),
        # Active (pending + executing) commands an agent may hold when a client queues one (force-switch,
        # issue-switch-command): an active command has no TTL, so without it a client could grow an agent's queue
        # without bound. The service's own commands (failover, decision cycle) are never refused.
        quota_max_queued_commands=_int("QUOTA_MAX_QUEUED_COMMANDS", 10),
        # New switches an agent may record in a UTC day (switch reports): a legacy report is taken on trust, and each
        # records rows only the agent's removal deletes. A switch command the service delivered is recorded past it
        # (counted); a client's new switch command is refused at it (chalicelib/command_queue.py).
        quota_max_switches_per_agent_per_day=_int("QUOTA_MAX_SWITCHES_PER_AGENT_PER_DAY", 24),
        # Default instance-type policy: no accelerated types, at most this many vCPUs (per-client override).
        max_instance_vcpus=_int("MAX_INSTANCE_VCPUS", 64),
        # Pricing aggregator (hourly/daily buckets of pool prices, docs/ARCHITECTURE.md "Price history"):
        # each run re-aggregates the whole days back to this many hours (the spot-prices job backfills a
        # day, so late AWS points land inside it); a pool never rolled up starts this far back.
        price_rollup_lookback_hours=_int("PRICE_ROLLUP_LOOKBACK_HOURS", 26),
        price_rollup_backfill_hours=_int("PRICE_ROLLUP_BACKFILL_HOURS", 72),
        price_rollup_max_pools=_int("PRICE_ROLLUP_MAX_POOLS", 2000),
        price_rollup_max_points=_int("PRICE_ROLLUP_MAX_POINTS", 20000),
        # An agent's price carries across empty hours this long after its last point (AWS prices carry
        # until the spot-prices job last confirmed them).
        price_agent_carry_s=_int("PRICE_AGENT_CARRY_S", 6 * 3600),
        price_hourly_retention_days=_int("PRICE_HOURLY_RETENTION_DAYS", 92),
        price_daily_retention_days=_int("PRICE_DAILY_RETENTION_DAYS", 400),
        # Data cleaner (daily): raw price points rolled up and older than this go (TTL drops the rest at
        # PRICE_RETENTION_DAYS); read notifications older than this go (TTL: NOTIFICATION_RETENTION_DAYS).
        # Local mode keeps them for the TTL's 90 days: the demo's report charts the raw points of its window.
        price_raw_retention_days=_int("PRICE_RAW_RETENTION_DAYS", 14 if stage != "local" else 90),
        notification_read_retention_days=_int("NOTIFICATION_READ_RETENTION_DAYS", 7),
        # A deleted or terminated agent whose deletion (else last update) is older than this goes, with its closed
        # replicas, its commands and its inactive instance rows (data cleaner). 90 days: the decisions,
        # interruptions and audit log that name it expire by TTL at 90 days, so the row outlives them.
        agent_retention_days=_int("AGENT_RETENTION_DAYS", 90),
        # Bounded work per cleaner run: clients walked, agents whose commands are queried (the walk resumes
        # where it stopped, inside a client too) and rows deleted. Agents: a commands and an instances Query each,
        # ≈ 12.6 ms (`python -m bench.cost`: 2 calls + 0.6 ms own per agent), so 10,000 agents ≈ 125 s; with the
        # other caps full (5,000 deletes ≈ 30 s, 200 clients' notification and agent Queries ≈ 3 s, the raw points
        # of PRICE_ROLLUP_MAX_POOLS pools ≈ 2 calls each, ≈ 25 s) a run stays near 185 s of its 300 s timeout.
        # A fleet of N agents is walked in ceil(N / 10,000) daily runs (TTL does most of the deleting).
        cleaner_max_clients=_int("CLEANER_MAX_CLIENTS", 200),
        cleaner_max_agents=_int("CLEANER_MAX_AGENTS", 10_000),
        cleaner_max_deletes=_int("CLEANER_MAX_DELETES", 5000),
    )


def table_prefix() -> str:
    """Prefix of every DynamoDB table name; one per stage (``spot-optimizer-dev-``)."""
    return os.environ.get("TABLE_PREFIX") or f"{APP_NAME}-{os.environ.get('SPOT_STAGE', 'dev')}-"


def model_bucket_name(stage: str, account: str, region: str) -> str:
    """The stage's model bucket. S3 names are global: the account and region make it unique, so a second
    deployer anywhere (or the same stage in another region) never collides. infra/ creates it with the
    stack's own ``AWS::AccountId``/``AWS::Region``; infra/policies.py grants ``model_bucket_name(stage, "*", "*")``
    (same account only)."""
    return f"{APP_NAME}-{stage}-models-{account}-{region}"


def admin_key_parameter_name(stage: str) -> str:
    """The stage's SSM parameter holding the admin-key hash."""
    return f"/{APP_NAME}/{stage}/admin-key-hash"


def event_queue_name(stage: str) -> str:
    """The stage's sentinel event queue. app.py names it in ``@app.on_sqs_message`` when it is imported, so
    the stage must be known then: ``chalice deploy/package --stage <s>`` set the stage's
    ``environment_variables`` (``SPOT_STAGE=<s>``, .chalice/config.json) before importing app.py, and
    infra/main.py sets SPOT_STAGE from ``-c stage=<s>`` before importing chalicelib."""
    return f"{APP_NAME}-{stage}-events"


# How long a received event stays invisible before it comes back (infra/event_intake.py creates the queue with it;
# local mode and the tests too): at least 6 × the sentinel's 30 s timeout, AWS's advice for Lambda event sources.
EVENT_QUEUE_VISIBILITY_S = 180


def event_dead_letter_queue_name(stage: str) -> str:
    """Where an event lands after failing ``maxReceiveCount`` times (infra/event_intake.py; `make redrive`)."""
    return f"{APP_NAME}-{stage}-events-dlq"


def decision_queue_name(stage: str) -> str:
    """The stage's decision queue: the decision cycle's dispatcher sends the agents to decide there, its worker
    (app.py ``@app.on_sqs_message``) consumes it. Known at import like ``event_queue_name``."""
    return f"{APP_NAME}-{stage}-decisions"


def decision_dead_letter_queue_name(stage: str) -> str:
    """Where a decision message lands after failing ``maxReceiveCount`` times (infra/work_queue.py). Nothing
    redrives it: a later cycle decides those agents again; the alarm says the worker keeps failing."""
    return f"{APP_NAME}-{stage}-decisions-dlq"


def savings_queue_name(stage: str) -> str:
    """The stage's savings queue: the savings roll-up's dispatcher sends the clients to roll up there, its worker
    (app.py ``@app.on_sqs_message``) consumes it. Known at import like ``event_queue_name``."""
    return f"{APP_NAME}-{stage}-savings"


def savings_dead_letter_queue_name(stage: str) -> str:
    """Where a savings message lands after failing ``maxReceiveCount`` times (infra/work_queue.py). Nothing
    redrives it: the next hourly run rolls those clients up again; the alarm says the worker keeps failing."""
    return f"{APP_NAME}-{stage}-savings-dlq"


def forwarded_event_dead_letter_queue_name(stage: str) -> str:
    """The dead-letter queue of the stage's event-forwarding rules in one more region (one per region:
    SQS names are regional). EventBridge puts there an event it could not put on the deploy region's bus
    (infra/event_intake.py ``EventForwarderStack``); `make redrive EVENT_REGIONS=...` sends them on."""
    return f"{APP_NAME}-{stage}-events-forward-dlq"
