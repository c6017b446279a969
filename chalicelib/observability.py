"""Powertools Logger, Metrics and Tracer shared by every handler, plus the HTTP middleware.

The middleware gives every request a correlation id (``X-Correlation-Id`` or API Gateway's request
id), one structured access log line and EMF metrics, whatever the route.

The Tracer is created on first use (``get_tracer()``, or the module attribute ``tracer``): creating it
imports ``aws_xray_sdk`` (~130 ms), which only the functions that trace (the failover tasks) should pay,
never the API function's cold start (docs/benchmarks.md "Cold start").
"""

from __future__ import annotations

import re
import time
import uuid
from functools import cache, wraps
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from chalicelib.settings import APP_NAME, get_settings

METRICS_NAMESPACE = "SpotOptimizer"
# Every metric carries the stage: two stages in one account never feed each other's alarms (infra/monitoring.py).
STAGE_DIMENSION = "stage"

logger = Logger(service=APP_NAME)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=APP_NAME)

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

CORRELATION_HEADER = "X-Correlation-Id"


@cache
def get_tracer() -> Tracer:
    """The powertools Tracer, created once per container on first use (it imports aws_xray_sdk)."""
    from aws_lambda_powertools import Tracer

    return Tracer(service=APP_NAME)


def __getattr__(name: str):
    """``observability.tracer`` still names the Tracer, created when first asked for."""
    if name == "tracer":
        return get_tracer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def logged_job(name: str):
    """Decorate a scheduled job's ``run``: its log lines carry ``job=name`` while it runs, and only then.

    ``append_keys`` would outlive the call: in local mode (one process) and in tests, the API's request
    lines that follow would name whichever job ran last."""
    def decorate(run):
        @wraps(run)
        def logged(*args, **kwargs):
            with logger.append_context_keys(job=name):
                return run(*args, **kwargs)
        return logged
    return decorate


# A caller's correlation id is echoed in the answer's headers and written into every log line of the request: only a
# plain token is taken (no CR/LF to split a header or a log line, no quotes, spaces or non-ASCII to forge either).
CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}", re.ASCII)


def _correlation_id(request) -> str:
    headers = request.headers or {}
    given = headers.get(CORRELATION_HEADER) or headers.get(CORRELATION_HEADER.lower())
    if given and CORRELATION_ID.fullmatch(given):
        return given
    return (request.context or {}).get("requestId") or uuid.uuid4().hex


def http_middleware(event, get_response):
    """Correlate, time, log and count one HTTP request."""
    correlation_id = _correlation_id(event)
    logger.set_correlation_id(correlation_id)
    started = time.perf_counter()
    response = get_response(event)
    elapsed_ms = (time.perf_counter() - started) * 1000
    route = (event.context or {}).get("resourcePath", event.path)
    status = response.status_code
    response.headers[CORRELATION_HEADER] = correlation_id
    logger.info("request", extra={"method": event.method, "route": route, "status": status,
                                  "latency_ms": round(elapsed_ms, 2)})
    metrics.add_dimension(name="route", value=f"{event.method} {route}")
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="Latency", unit=MetricUnit.Milliseconds, value=elapsed_ms)
    if status >= 500:
        metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
    elif status >= 400:
        metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
    publish_metrics()
    return response


def publish_metrics() -> None:
    """Print this invocation's EMF metrics, then forget them. When metrics are disabled (local mode,
    tests) powertools keeps them, so a long-lived process would pile them up: clear regardless."""
    if metrics.metric_set:
        metrics.add_dimension(name=STAGE_DIMENSION, value=get_settings().stage)
        metrics.flush_metrics()
    metrics.clear_metrics()
