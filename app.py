"""Spot Optimizer: the Chalice application. Wiring only: blueprints, middleware, schedules, event
handlers and the failover workflow's task functions.

Every function loads this module, so it imports only what the API needs to register its routes; each
other handler imports its own module (job, sentinel, failover steps) inside its body, on its first call
(`python -m bench.cold_start` reads those imports; docs/benchmarks.md "Cold start")."""

from chalice import Chalice, Cron, Rate

from chalicelib.api import (
    admin,
    admin_fleet,
    agents,
    clients,
    console,
    dashboard,
    dashboard_agents,
    dashboard_instances,
    decisions,
    docs,
    health,
    interruptions,
    models,
    price_history,
    replicas,
    savings,
)
from chalicelib.api.common import chalice_error_shape, security_headers
from chalicelib.jobs import scheduled_time
from chalicelib.observability import http_middleware
from chalicelib.settings import (
    APP_NAME,
    DECISION_WORKER_BATCH_SIZE,
    DECISION_WORKER_CONCURRENCY,
    SAVINGS_WORKER_BATCH_SIZE,
    SAVINGS_WORKER_CONCURRENCY,
    SENTINEL_BATCH_SIZE,
    SENTINEL_CONCURRENCY,
    SENTINEL_FUNCTION,
    decision_queue_name,
    event_queue_name,
    get_settings,
    savings_queue_name,
)

app = Chalice(app_name=APP_NAME)
# The legacy dashboard's model upload is multipart with binary files: API Gateway must pass it unaltered.
app.api.binary_types.append("multipart/form-data")

for blueprint in (health.bp, agents.bp, clients.bp, decisions.bp, admin.bp, models.bp, interruptions.bp,
                  replicas.bp, dashboard.bp, dashboard_agents.bp, dashboard_instances.bp, price_history.bp,
                  console.bp, savings.bp, admin_fleet.bp, docs.bp):
    app.register_blueprint(blueprint)
app.register_middleware(chalice_error_shape, "http")
app.register_middleware(http_middleware, "http")
app.register_middleware(security_headers, "http")
if get_settings().local:  # local mode only (never deployed): EventBridge's PutEvents, the replay clock
    from localmode.routes import bp as local_routes

    app.register_blueprint(local_routes)


# --- scheduled jobs (the event's time is the scheduled time: local mode can run the clock fast) ---

@app.schedule(Rate(1, unit=Rate.MINUTES), name="health-monitor")
def health_monitor(event):
    """Lease expiry and agent liveness, every minute."""
    from chalicelib.jobs import health_monitor as health_monitor_job

    return health_monitor_job.run(scheduled_time(event))


@app.schedule(Rate(15, unit=Rate.MINUTES), name="risk-scorer")
def risk_scorer(event):
    """Interruption risk of every pool, every 15 minutes (the only function with the ML layer)."""
    from chalicelib.jobs import risk_scorer as risk_scorer_job

    return risk_scorer_job.run(scheduled_time(event))


@app.schedule(Rate(5, unit=Rate.MINUTES), name="decision-cycle")
def decision_cycle(event):
    """Every 5 minutes: the live agents to the decision queue, 25 a message (the decision-worker decides)."""
    from chalicelib.jobs import decision_cycle as decision_cycle_job

    return decision_cycle_job.run(scheduled_time(event))


# The name is written out (settings.DECISION_WORKER_FUNCTION): infra/boto_calls.py and bench/cold_start.py read it
# from this file's text.
@app.on_sqs_message(queue=decision_queue_name(get_settings().stage), batch_size=DECISION_WORKER_BATCH_SIZE,
                    maximum_concurrency=DECISION_WORKER_CONCURRENCY, name="decision-worker")
def decision_worker(event):
    """Decisions for the agents of the decision cycle's messages, as of each message's scheduled time.
    Returns the batch item failures (messages SQS must deliver again)."""
    from chalicelib.jobs import decision_cycle as decision_cycle_job

    return decision_cycle_job.on_sqs_batch(event.to_dict(), event.context)


@app.schedule(Rate(1, unit=Rate.MINUTES), name="replica-coordinator")
def replica_coordinator(event):
    """One ready standby per manual-replica agent; expired pre-warmed standbys closed."""
    from chalicelib.jobs import replica_coordinator as replica_coordinator_job

    return replica_coordinator_job.run(scheduled_time(event))


@app.schedule(Rate(10, unit=Rate.MINUTES), name="cleanup")
def cleanup(event):
    """Orphaned instances terminated, expired standbys closed, EC2 reconciled with the tables."""
    from chalicelib.jobs import cleanup as cleanup_job

    return cleanup_job.run(scheduled_time(event))


@app.schedule(Rate(10, unit=Rate.MINUTES), name="spot-prices")
def spot_prices(event):
    """Pool prices from EC2's spot price history (the source of truth; agent reports only fill gaps)."""
    from chalicelib.jobs import spot_prices as spot_prices_job

    return spot_prices_job.run(scheduled_time(event))


@app.schedule(Rate(1, unit=Rate.HOURS), name="placement-scores")
def placement_scores(event):
    """Spot placement scores as capacity observations (each (region, type) at most every 6 h)."""
    from chalicelib.jobs import placement_scores as placement_scores_job

    return placement_scores_job.run(scheduled_time(event))


@app.schedule(Rate(15, unit=Rate.MINUTES), name="pricing-aggregator")
def pricing_aggregator(event):
    """Hourly and daily buckets of the pools' prices (gap-filled), re-aggregated where late points landed."""
    from chalicelib.jobs import pricing_aggregator as pricing_aggregator_job

    return pricing_aggregator_job.run(scheduled_time(event))


@app.schedule(Rate(1, unit=Rate.DAYS), name="data-cleaner")
def data_cleaner(event):
    """Retention beyond TTL: old finished commands, old read notifications, rolled-up raw price points."""
    from chalicelib.jobs import data_cleaner as data_cleaner_job

    return data_cleaner_job.run(scheduled_time(event))

# --- savings: savings-rollup / savings-close (dispatchers) → the savings queue → savings-worker; savings-fleet ---

@app.schedule(Cron(0, "*", "*", "*", "?", "*"), name="savings-rollup")
def savings_rollup(event):
    """Every hour at :00: the clients to the savings queue, 10 a message (the savings-worker re-integrates each
    one's instances' real cost vs on-demand over the trailing 48 h, late reports absorbed)."""
    from chalicelib.jobs import savings_rollup as savings_rollup_job

    return savings_rollup_job.run(scheduled_time(event))


@app.schedule(Cron(15, 0, "*", "*", "?", "*"), name="savings-close")
def savings_close(event):
    """00:15 UTC: the roll-up once more after the day's late reports, closing yesterday (and last month)."""
    from chalicelib.jobs import savings_rollup as savings_rollup_job

    return savings_rollup_job.run(scheduled_time(event))


@app.on_sqs_message(queue=savings_queue_name(get_settings().stage), batch_size=SAVINGS_WORKER_BATCH_SIZE,
                    maximum_concurrency=SAVINGS_WORKER_CONCURRENCY, name="savings-worker")
def savings_worker(event):
    """The savings roll-up of the clients of the dispatchers' messages, as of each message's scheduled time.
    Returns the batch item failures (chalicelib/jobs/savings_rollup.py)."""
    from chalicelib.jobs import savings_rollup as savings_rollup_job

    return savings_rollup_job.on_sqs_batch(event.to_dict(), event.context)


@app.schedule(Cron(45, "*", "*", "*", "?", "*"), name="savings-fleet")
def savings_fleet(event):
    """Every hour at :45, after the workers: the fleet's rows from the clients' stored day rows of the last run
    (00:45 closes yesterday's fleet day after the 00:15 close)."""
    from chalicelib.jobs import savings_fleet as savings_fleet_job

    return savings_fleet_job.run(scheduled_time(event))


@app.schedule(Rate(15, unit=Rate.MINUTES), name="growth-snapshot")
def growth_snapshot(event):
    """Every 15 minutes: the fleet's counts for the admin stats and today's growth row (clients, agents,
    instances, total savings)."""
    from chalicelib.jobs import snapshots as snapshots_job

    return snapshots_job.run(scheduled_time(event))


# --- sentinel: EventBridge rules → the stage's event queue (+ dead-letter queue) → one function ---------

@app.on_sqs_message(queue=event_queue_name(get_settings().stage), batch_size=SENTINEL_BATCH_SIZE,
                    maximum_concurrency=SENTINEL_CONCURRENCY, name=SENTINEL_FUNCTION)
def sentinel(event):
    """Spot interruption warnings, rebalance recommendations, state changes and AWS Health scheduled
    retirements (components/sentinel/rules.py; infra/event_intake.py creates the queue and the rules) →
    failover workflow / pre-warmed standby. Returns the batch item failures."""
    from chalicelib import sentinel as sentinel_intake

    return sentinel_intake.on_sqs_batch(event.to_dict(), event.context)


# --- failover state machine tasks (chalicelib/workflows/failover.asl.json) ---

@app.lambda_function(name="failover-plan")
def failover_plan(event, context):
    from chalicelib import failover

    return failover.run_step(failover.plan, event)


@app.lambda_function(name="failover-launch")
def failover_launch(event, context):
    from chalicelib import failover

    return failover.run_step(failover.launch, event)


@app.lambda_function(name="failover-check-ready")
def failover_check_ready(event, context):
    from chalicelib import failover

    return failover.run_step(failover.check_ready, event)


@app.lambda_function(name="failover-handover")
def failover_handover(event, context):
    from chalicelib import failover

    return failover.run_step(failover.handover, event)


@app.lambda_function(name="failover-record")
def failover_record(event, context):
    from chalicelib import failover

    return failover.run_step(failover.record, event)


@app.lambda_function(name="failover-retire")
def failover_retire(event, context):
    from chalicelib import failover

    return failover.run_step(failover.retire, event)


@app.lambda_function(name="failover-next-standby")
def failover_next_standby(event, context):
    from chalicelib import failover

    return failover.run_step(failover.next_standby, event)


@app.lambda_function(name="failover-failed")
def failover_failed(event, context):
    from chalicelib import failover

    return failover.run_step(failover.failed, event)
