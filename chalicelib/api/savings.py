"""Savings routes: a client's savings (summary, months, last 30 days; CSV) and the admin growth series.

Figures come from the savings repository only (the roll-up job writes them); nothing is computed here.
"""

from __future__ import annotations

from chalicelib.api.common import ApiBlueprint, admin_request, ok, utcnow
from chalicelib.api.csv_export import csv_response, wants_csv
from chalicelib.api.dashboard import choice, own_client
from chalicelib.api.inputs import int_param
from chalicelib.api.route_doc import Query
from chalicelib.repositories import savings

bp = ApiBlueprint(__name__)

MONTHLY_COLUMNS = ["month", "baseline_cost", "actual_cost", "savings", "savings_percent"]
DAILY_COLUMNS = ["date", "baseline_cost", "actual_cost", "savings", "spot_hours", "ondemand_hours"]


def _request():
    return bp.current_request


@bp.route("/api/client/{client_id}/savings", methods=["GET"], response="ClientSavingsReply", csv=True,
          query=[Query("period", enum=("monthly", "daily"), description="csv rows: monthly (default) or daily")])
def client_savings(client_id):
    """Savings to date, per month (``?months=12``, 1..36) and per day for the last 30 days.

    ``?format=csv`` answers the monthly rows (``&period=daily``: the daily rows)."""
    own_client(_request(), client_id)
    months = int_param(_request().query_params or {}, "months", default=12, low=1, high=36)
    as_csv = wants_csv(_request())
    period = choice(_request(), "period", ("monthly", "daily"), "monthly")
    now = utcnow()
    if as_csv and period == "daily":
        return csv_response(savings.daily(client_id, 30, now), DAILY_COLUMNS, f"savings-daily-{client_id}.csv")
    monthly = savings.monthly(client_id, months, now)
    if as_csv:
        return csv_response(monthly, MONTHLY_COLUMNS, f"savings-monthly-{client_id}.csv")
    return ok({"client_id": client_id, "summary": savings.client_summary(client_id, now), "monthly": monthly,
               "daily": savings.daily(client_id, 30, now)})


@bp.route("/api/admin/clients/growth", methods=["GET"], response="GrowthReply")
def clients_growth():
    """The daily growth snapshots (``?days=30``, 1..365), oldest first."""
    admin_request(_request())
    days = int_param(_request().query_params or {}, "days", default=30, low=1, high=365)
    return ok({"days": days, "growth": savings.growth(days, utcnow())})
