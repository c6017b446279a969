"""Console pages backed by the issue #13 dashboard, savings and admin-fleet routes: every page shows the API's
numbers (formatted as shown, never computed in the browser) and its actions round-trip."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import cells, goto, sign_in

pytestmark = pytest.mark.slow


def usd(v) -> str:
    return "—" if v is None else f"${v:.4f}"


def loaded(page, section: str) -> None:
    """Wait until a section has its data (table, chart, stats, key-value list or 'nothing') or an error; fail
    on the error."""
    sel = f"[data-section='{section}']"
    page.wait_for_selector(f"{sel} table, {sel} .stats, {sel} .chart, {sel} dl.kv, {sel} .empty, {sel} .error")
    errors = page.query_selector_all(f"{sel} .error")
    assert not errors, errors[0].inner_text()


def stat(page, section: str, key: str) -> str:
    return page.inner_text(f"[data-section='{section}'] [data-stat='{key}'] .stat-value")


def _cid(demo) -> str:
    return demo.client_id()


def test_overview_shows_the_clients_summary_charts_and_recent_switches(page, demo):
    cid = _cid(demo)
    sign_in(page, "client", demo.token)
    loaded(page, "summary")
    summary = demo.call("GET", f"/api/client/{cid}")
    assert stat(page, "summary", "total_savings") == usd(summary["savings"]["total_savings"])
    assert stat(page, "summary", "agents_online") == f"{summary['agents_online']} / {summary['agents_total']}"
    assert stat(page, "summary", "instances_active") == str(summary["instances_active"])
    loaded(page, "charts")
    for chart in ("savings-trend", "cost-vs-ondemand", "mode-mix", "switches-per-day"):
        assert page.query_selector(f"[data-chart='{chart}'] canvas") is not None, chart
    loaded(page, "recent-switches")
    switches = demo.call("GET", f"/api/client/{cid}/switch-history?limit=10")["switches"]
    assert cells(page, "recent-switches", "new_price") == [usd(s["new_price"]) for s in switches]


def test_agents_list_shows_every_agent_with_its_status_and_mode(page, demo):
    agents = demo.call("GET", f"/api/client/{_cid(demo)}/agents?limit=50")["agents"]
    sign_in(page, "client", demo.token)
    goto(page, demo, "agents", "[data-section=agents]")
    loaded(page, "agents")
    assert cells(page, "agents", "status") == [a["status"] for a in agents]
    assert cells(page, "agents", "config_version") == [str(a["config_version"]) for a in agents]


def test_an_agent_is_disabled_enabled_and_deleted_from_its_page(page, demo):
    cid = _cid(demo)
    agent = next(a["agent_id"] for a in demo.raw["agents"] if a["mode"] == "auto-switch")
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, "client", demo.token)
    goto(page, demo, f"agents/{agent}", "[data-section=agent]")
    loaded(page, "agent")
    page.click("[data-action=toggle-enabled]")
    page.wait_for_selector("text=Agent disabled.")
    row = next(a for a in demo.call("GET", f"/api/client/{cid}/agents?limit=100")["agents"] if a["agent_id"] == agent)
    assert row["enabled"] is False
    page.click("[data-action=toggle-enabled]")
    page.wait_for_selector("text=Agent enabled.")
    page.click("[data-action=delete-agent]")
    page.wait_for_selector("text=Agent deleted.")
    history = demo.call("GET", f"/api/client/{cid}/agents/history?limit=100")["agents"]
    assert next(a for a in history if a["agent_id"] == agent)["status"] == "deleted"


def test_instances_are_filtered_and_exported(page, demo):
    cid = _cid(demo)
    sign_in(page, "client", demo.token)
    goto(page, demo, "instances", "[data-section=instances]")
    loaded(page, "instances")
    active = demo.call("GET", f"/api/client/{cid}/instances?limit=50")["instances"]
    assert cells(page, "instances", "instance_id") == [i["instance_id"] for i in active]
    page.select_option("select[name=status]", "all")
    page.select_option("select[name=mode]", "ondemand")
    page.click(".filters button[type=submit]")
    wanted = demo.call("GET", f"/api/client/{cid}/instances?status=all&mode=ondemand&limit=50")["instances"]
    # the filtered rows themselves, not just as many rows (the active list may be as long as the filtered one)
    # (expect retries from Python: a string predicate polled in the page would need eval, which the CSP refuses)
    expect(page.locator("table[data-table=instances] td[data-col=instance_id]")).to_have_text(
        [i["instance_id"] for i in wanted], timeout=15_000)
    assert cells(page, "instances", "current_price") == [usd(i["current_price"]) for i in wanted]
    with page.expect_download() as download:
        page.click("[data-section=instances] [data-action=csv]")
    header = open(download.value.path()).readline()
    assert "instance_id" in header


def test_an_instance_shows_its_metrics_switch_targets_and_prices(page, demo):
    active = demo.current_primary()
    iid = active["instance_id"]
    sign_in(page, "client", demo.token)
    goto(page, demo, f"instances/{iid}", "[data-section=metrics]")
    loaded(page, "metrics")
    metrics = demo.call("GET", f"/api/client/instances/{iid}/metrics")
    assert stat(page, "metrics", "savings_total") == usd(metrics["savings_total"])
    assert stat(page, "metrics", "switches_30d") == str(metrics["switches_30d"])
    loaded(page, "targets")
    pricing = demo.call("GET", f"/api/client/instances/{iid}/pricing")
    assert cells(page, "targets", "price") == [usd(p["price"]) for p in pricing["pools"]]
    loaded(page, "prices")
    assert page.query_selector("[data-chart=price-history] canvas") is not None
    page.check("form[data-form=force-switch] input[name=target][value=pool]")
    options = page.eval_on_selector_all("select[name=pool_id] option", "os => os.map(o => o.value).filter(Boolean)")
    assert options == [p["pool_id"] for p in pricing["pools"] if not p["is_current"]]


def test_replicas_page_lists_every_replica_with_its_primary(page, demo):
    replicas = demo.call("GET", f"/api/client/{_cid(demo)}/replicas?limit=100")["replicas"]
    sign_in(page, "client", demo.token)
    goto(page, demo, "replicas", "[data-section=replicas]")
    loaded(page, "replicas")
    assert cells(page, "replicas", "replica_id") == [r["replica_id"] for r in replicas]


def test_decisions_page_shows_every_agents_last_decisions(page, demo):
    agents = demo.call("GET", f"/api/client/{_cid(demo)}/agents/decisions")["agents"]
    sign_in(page, "client", demo.token)
    goto(page, demo, "decisions", "[data-page=decisions] .card, [data-page=decisions] .error, [data-page=decisions] .empty")
    assert not page.query_selector_all("[data-page=decisions] .error")
    for agent in agents:
        shown = cells(page, "decisions", "reason") if len(agents) == 1 else [
            c.inner_text() for c in page.query_selector_all(f"[data-section='decisions-{agent['agent_id']}'] td[data-col=reason]")]
        assert shown == [d["reason"] for d in agent["decisions"]]


def test_savings_page_shows_the_apis_savings_and_exports_csv(page, demo):
    savings = demo.call("GET", f"/api/client/{_cid(demo)}/savings?months=12")
    sign_in(page, "client", demo.token)
    goto(page, demo, "savings", "[data-page=savings] .card, [data-page=savings] .error")
    loaded(page, "savings-summary")
    assert stat(page, "savings-summary", "total_savings") == usd(savings["summary"]["total_savings"])
    # One source: the demo's printed summary took its savings from the same roll-up the console shows.
    assert demo.raw["savings"]["client"]["total_savings"] == savings["summary"]["total_savings"]
    assert cells(page, "savings-monthly", "savings") == [usd(m["savings"]) for m in savings["monthly"]]
    with page.expect_download() as download:
        page.click("[data-action=csv]")
    assert "month" in open(download.value.path()).readline() or "date" in open(download.value.path()).readline()


def test_admin_overview_shows_fleet_stats_and_growth(page, demo):
    sign_in(page, "admin", demo.admin_key)
    loaded(page, "fleet-stats")
    stats = demo.call("GET", "/api/admin/stats", admin=True)
    assert stat(page, "fleet-stats", "instances_active") == str(stats["instances_active"])
    assert stat(page, "fleet-stats", "total_savings") == usd(stats["savings"]["total_savings"])
    loaded(page, "growth")
    assert page.query_selector("[data-chart=growth-clients] canvas") is not None


def test_admin_sees_all_agents_and_instances(page, demo):
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, "agents", "[data-section=agents]")
    loaded(page, "agents")
    agents = demo.call("GET", "/api/admin/agents?limit=50", admin=True)["agents"]
    assert cells(page, "agents", "client_id") == [a["client_id"] for a in agents]
    goto(page, demo, "instances", "[data-section=instances]")
    loaded(page, "instances")
    instances = demo.call("GET", "/api/admin/instances?limit=50", admin=True)["instances"]
    assert cells(page, "instances", "instance_id") == [i["instance_id"] for i in instances]


def test_admin_sees_system_health(page, demo):
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, "health", "[data-page=health] .card, [data-page=health] .error")
    loaded(page, "health")
    health = demo.call("GET", "/api/admin/system-health", admin=True)
    assert page.inner_text("[data-section=health] .card-head .badge") == health["status"]


def test_admin_deletes_a_client_only_after_typing_its_name(page, demo):
    doomed = demo.call("POST", "/api/admin/clients/create", {"name": "to-be-deleted"}, admin=True)
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, "clients", f"tr[data-row='{doomed['client_id']}']")
    page.click(f"tr[data-row='{doomed['client_id']}'] [data-action=delete]")
    confirm = "form[data-form=delete-client] button[type=submit]"
    assert page.is_disabled(confirm)
    page.fill("form[data-form=delete-client] input[name=confirm]", "to-be-delete")
    assert page.is_disabled(confirm)
    page.fill("form[data-form=delete-client] input[name=confirm]", "to-be-deleted")
    page.click(confirm)
    page.wait_for_selector("text=Client to-be-deleted deleted")
    demo.call("GET", f"/api/admin/clients/{doomed['client_id']}", admin=True, expect=404)
