"""Spot Optimizer: the Chalice application. Wiring only: blueprints, middleware, schedules."""

from chalice import Chalice, Rate

from chalicelib.api import admin, agents, clients, decisions, health, models
from chalicelib.api.common import utcnow
from chalicelib.jobs import decision_cycle as decision_cycle_job
from chalicelib.jobs import health_monitor as health_monitor_job
from chalicelib.jobs import risk_scorer as risk_scorer_job
from chalicelib.observability import http_middleware
from chalicelib.settings import APP_NAME

app = Chalice(app_name=APP_NAME)

for blueprint in (health.bp, agents.bp, clients.bp, decisions.bp, admin.bp, models.bp):
    app.register_blueprint(blueprint)
app.register_middleware(http_middleware, "http")


@app.schedule(Rate(1, unit=Rate.MINUTES), name="health-monitor")
def health_monitor(event):
    """Lease expiry and agent liveness, every minute."""
    return health_monitor_job.run(utcnow())


@app.schedule(Rate(15, unit=Rate.MINUTES), name="risk-scorer")
def risk_scorer(event):
    """Interruption risk of every pool, every 15 minutes (the only function with the ML layer)."""
    return risk_scorer_job.run(utcnow())


@app.schedule(Rate(5, unit=Rate.MINUTES), name="decision-cycle")
def decision_cycle(event):
    """Decisions for every live auto-switch agent, every 5 minutes."""
    return decision_cycle_job.run(utcnow())
