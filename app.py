"""Spot Optimizer: the Chalice application. Wiring only: blueprints, middleware, schedules."""

from chalice import Chalice, Rate

from chalicelib.api import admin, agents, clients, health
from chalicelib.api.common import utcnow
from chalicelib.jobs import health_monitor as health_monitor_job
from chalicelib.observability import http_middleware
from chalicelib.settings import APP_NAME

app = Chalice(app_name=APP_NAME)

for blueprint in (health.bp, agents.bp, clients.bp, admin.bp):
    app.register_blueprint(blueprint)
app.register_middleware(http_middleware, "http")


@app.schedule(Rate(1, unit=Rate.MINUTES), name="health-monitor")
def health_monitor(event):
    """Lease expiry and agent liveness, every minute."""
    return health_monitor_job.run(utcnow())
