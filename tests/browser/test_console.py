"""The web console in headless Chromium against local mode serving a short demo replay: sign-in and its
errors, every page backed by a route the API has, the numbers the API returns (the console computes none),
a configuration change and a force switch that reach the tables, replicas terminated and promoted, the
admin's client, model and activity pages, and a client that never sees another client's data.

Pages whose routes the API does not have yet are tested in test_console_pending_routes.py."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import cells, goto, sign_in
from localmode.embedded_aws import IMAGE_ID
from chalicelib.aws.ec2 import MANAGED_BY, TAG_CLIENT, TAG_MANAGED_BY, TAG_STAGE
from chalicelib.errors import error_body, unknown_route

pytestmark = pytest.mark.slow

AGENTS_TABLE = "spot-optimizer-local-agents"
COMMANDS_TABLE = "spot-optimizer-local-commands"


def _secs(ms) -> str:
    return "—" if ms is None else f"{ms / 1000:.3f} s"


def _agent(demo, mode: str) -> str:
    return next(a["agent_id"] for a in demo.raw["agents"] if a["mode"] == mode)


# --- sign-in ---

def test_sign_in_errors_are_shown_and_nothing_is_kept(page, demo):
    page.check("input[name=kind][value=client]")
    page.fill("input[name=secret]", "sot_not-a-real-token")
    page.click("button[type=submit]")
    assert page.inner_text("#signin-error") == "This token is not valid."
    page.check("input[name=kind][value=admin]")
    page.fill("input[name=secret]", demo.token)  # a client token is no admin key
    page.click("button[type=submit]")
    page.wait_for_selector("text=This admin key is not valid.")
    assert page.evaluate("sessionStorage.length") == 0
    # an inactive client: 403, said as such
    created = demo.call("POST", "/api/admin/clients/create", {"name": "inactive-co"}, admin=True)
    demo.call("POST", f"/api/admin/clients/{created['client_id']}/status", {"status": "inactive"}, admin=True)
    page.check("input[name=kind][value=client]")
    page.fill("input[name=secret]", created["client_token"])
    page.click("button[type=submit]")
    page.wait_for_selector("#signin-error >> text=Access refused")
    assert page.evaluate("sessionStorage.length") == 0


def test_the_secret_stays_in_session_storage_never_in_a_url(page, demo):
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    sign_in(page, "client", demo.token)
    goto(page, demo, "notifications", "table[data-table=notifications]")
    assert demo.token not in page.url and all(demo.token not in url for url in requested)
    assert page.evaluate("localStorage.length") == 0
    assert demo.token in page.evaluate("JSON.stringify(sessionStorage)")
    page.click("text=Sign out")
    page.wait_for_selector("input[name=secret]")
    assert page.evaluate("sessionStorage.length") == 0


# --- client pages on routes the API has ---

def test_interruptions_show_what_happened_and_each_steps_time_from_the_api(page, demo):
    api = demo.call("GET", "/api/client/interruptions?limit=50")["interruptions"]
    assert len(api) >= 1 and len(api) == len(demo.raw["interruptions"])
    sign_in(page, "client", demo.token)
    goto(page, demo, "interruptions", "table[data-table=interruptions]")
    assert cells(page, "interruptions", "response_action") == [i["response_action"] for i in api]
    assert cells(page, "interruptions", "failover_time_ms") == [_secs(i["failover_time_ms"]) for i in api]
    assert cells(page, "interruptions", "traffic_moved") == [_secs(i["step_ms"]["traffic_moved"]) for i in api]
    assert cells(page, "interruptions", "decide") == [_secs(i["step_ms"]["decide"]) for i in api]
    assert any(c != "—" for c in cells(page, "interruptions", "failover_time_ms"))


def test_notifications_are_listed_and_marked_read(page, demo):
    api = demo.call("GET", "/api/notifications?limit=50")["notifications"]
    assert api, "the demo's failovers notify the client"
    sign_in(page, "client", demo.token)
    goto(page, demo, "notifications", "table[data-table=notifications]")
    assert cells(page, "notifications", "message") == [n["message"] for n in api]
    first_unread = next(n for n in api if not n["is_read"])
    page.click(f"table[data-table=notifications] tr[data-row='{first_unread['id']}'] [data-action=mark-read]")
    # The whole cell is "read" once the server answered and the page reloaded ("text=read" would also match the
    # button's "Mark read" at once, and the API would be asked before the click's request arrived).
    expect(page.locator(f"tr[data-row='{first_unread['id']}'] td[data-col=read]")).to_have_text("read",
                                                                                              timeout=15_000)
    after = {n["id"]: n for n in demo.call("GET", "/api/notifications?limit=50")["notifications"]}
    assert after[first_unread["id"]]["is_read"] is True


def test_an_agents_page_shows_its_decisions_with_their_reasons_and_its_interruptions(page, demo):
    agent = _agent(demo, "manual-replica")  # the one the demo's warnings hit
    decisions = demo.call("GET", f"/api/client/agents/{agent}/decisions?limit=20")["decisions"]
    interruptions = demo.call("GET", f"/api/agents/{agent}/interruptions?limit=20")["interruptions"]
    assert decisions
    sign_in(page, "client", demo.token)
    goto(page, demo, f"agents/{agent}", "table[data-table=decisions]")
    assert cells(page, "decisions", "reason") == [d["reason"] for d in decisions]
    expected = ["—" if d["target"] not in (d["expected_cost"] or {}) else f"${d['expected_cost'][d['target']]:.4f}"
                for d in decisions]
    assert cells(page, "decisions", "expected_cost") == expected
    if interruptions:
        page.wait_for_selector("table[data-table=interruptions]")
        assert cells(page, "interruptions", "failover_time_ms") == [_secs(i["failover_time_ms"]) for i in interruptions]
    # the full history, page by page (the API's next_token)
    goto(page, demo, f"decisions/{agent}", "table[data-table=decisions]")
    assert cells(page, "decisions", "reason") == [d["reason"] for d in
                                                  demo.call("GET", f"/api/client/agents/{agent}/decisions?limit=50")["decisions"]]


def test_a_configuration_change_round_trips_to_the_agents_table(page, demo):
    agent = _agent(demo, "auto-switch")
    client_id = demo.client_id()
    sign_in(page, "client", demo.token)
    goto(page, demo, f"agents/{agent}", "form[data-form=config]")
    page.check("form[data-form=config] input[name=mode][value=replica]")
    page.check("form[data-form=config] input[name=auto_terminate_enabled]")
    page.fill("form[data-form=config] input[name=terminate_wait_seconds]", "420")
    page.click("form[data-form=config] button[type=submit]")
    page.wait_for_selector("[data-saved-config]")
    assert "Configuration saved (version" in page.inner_text("form[data-form=config] .notice")
    shown = {k: page.inner_text(f"[data-saved-config] dd[data-key={k}]") for k in
             ("auto_switch_enabled", "manual_replica_enabled", "auto_terminate_enabled", "terminate_wait_seconds")}
    assert shown == {"auto_switch_enabled": "no", "manual_replica_enabled": "yes", "auto_terminate_enabled": "yes",
                     "terminate_wait_seconds": "420 s"}
    stored = demo.aws_probe(
        f"item = boto3.resource('dynamodb').Table('{AGENTS_TABLE}').get_item(Key={{'client_id': '{client_id}', "
        f"'agent_id': '{agent}'}})['Item']\nprint(json.dumps({{k: str(v) for k, v in item['config'].items()}}))")
    assert (stored["manual_replica_enabled"], stored["auto_switch_enabled"], stored["auto_terminate_enabled"],
            stored["terminate_wait_seconds"]) == ("True", "False", "True", "420")
    # a bad value is refused by the API and the refusal is shown
    page.fill("form[data-form=config] input[name=terminate_wait_seconds]", "100000")
    page.click("form[data-form=config] button[type=submit]")
    page.wait_for_selector("form[data-form=config] .error >> text=answered 400")


def test_a_force_switch_round_trips_to_the_command_queue(page, demo):
    active = demo.current_primary()
    sign_in(page, "client", demo.token)
    goto(page, demo, f"instances/{active['instance_id']}", "form[data-form=force-switch]")
    page.check("form[data-form=force-switch] input[name=target][value=ondemand]")
    page.click("form[data-form=force-switch] button[type=submit]")
    notice = page.wait_for_selector("form[data-form=force-switch] .notice").inner_text()
    command_id = re.search(r"command (\S+) to ondemand \(priority 75, pending\)", notice).group(1)
    stored = demo.aws_probe(
        f"item = boto3.resource('dynamodb').Table('{COMMANDS_TABLE}').get_item(Key={{'agent_id': "
        f"'{active['agent_id']}', 'command_id': '{command_id}'}})['Item']\n"
        "print(json.dumps({k: str(item.get(k)) for k in ('status', 'target_mode', 'priority', 'trigger')}))")
    assert stored == {"status": "pending", "target_mode": "ondemand", "priority": "75", "trigger": "manual_ui"}
    # an instance that is gone is not its agent's primary: no form, the reason instead (the API would answer 409)
    gone = next(i for i in demo.raw["instances"] if not i["is_active"])
    goto(page, demo, f"instances/{gone['instance_id']}", "[data-section=force-switch] [data-not-switchable]")
    assert page.query_selector("form[data-form=force-switch]") is None


def _standby(demo, agent: str) -> str:
    """A standby for ``agent`` recorded through the replicas route (the client's legacy agent mode on): an
    instance in the embedded EC2 (its region, another AZ) tagged as the product tags its launches for the client
    and stage (the demo's agents are verified, and a verified agent's standby must be one the product launched)."""
    primary = next(i for i in demo.raw["instances"] if i["agent_id"] == agent and i["is_active"] and i["role"] == "primary")
    itype, _, az = primary["pool_id"].rpartition(".")
    region = az[:-1]
    other = next(z for z in "abcdef" if region + z != az)
    instance_id = demo.aws_probe(
        f"e = boto3.client('ec2', region_name='{region}'); image = '{IMAGE_ID}'\n"
        f"ours = e.describe_instances(Filters=[{{'Name': 'tag:{TAG_MANAGED_BY}', 'Values': ['{MANAGED_BY}']}}])\n"
        f"stage = next(t['Value'] for r in ours['Reservations'] for i in r['Instances'] for t in i['Tags'] "
        f"if t['Key'] == '{TAG_STAGE}')\n"
        f"tags = [{{'Key': '{TAG_MANAGED_BY}', 'Value': '{MANAGED_BY}'}}, "
        f"{{'Key': '{TAG_CLIENT}', 'Value': '{demo.client_id()}'}}, {{'Key': '{TAG_STAGE}', 'Value': stage}}]\n"
        f"print(json.dumps(e.run_instances(ImageId=image, InstanceType='{itype}', MinCount=1, MaxCount=1, "
        f"Placement={{'AvailabilityZone': '{region}{other}'}}, "
        f"TagSpecifications=[{{'ResourceType': 'instance', 'Tags': tags}}])['Instances'][0]['InstanceId']))")
    created = demo.call("POST", f"/api/agents/{agent}/replicas",
                        {"instance_id": instance_id, "pool_id": f"{itype}.{region}{other}"}, expect=201)
    return created["replica_id"]


def test_replicas_are_terminated_and_promoted_from_the_agents_page(page, demo):
    agent = _agent(demo, "manual-replica")
    demo.call("POST", f"/api/admin/clients/{demo.client_id()}/legacy-agents", {"enabled": True}, admin=True)
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, "client", demo.token)
    replica = _standby(demo, agent)
    goto(page, demo, f"agents/{agent}", f"table[data-table=agent-replicas] tr[data-row='{replica}']")
    page.click(f"tr[data-row='{replica}'] [data-action=terminate]")
    page.wait_for_selector(f"text=Replica {replica} is terminated.")
    listed = {r["replica_id"]: r for r in demo.call(
        "GET", f"/api/agents/{agent}/replicas?include_terminated=true")["replicas"]}
    assert listed[replica]["status"] == "terminated"
    page.wait_for_selector(f"tr[data-row='{replica}'] td[data-col=status] >> text=terminated")  # reloaded

    second = _standby(demo, agent)
    goto(page, demo, f"agents/{agent}", f"tr[data-row='{second}'] [data-action=promote]")
    page.click(f"tr[data-row='{second}'] [data-action=promote]")
    notice = page.wait_for_selector(f"text=Promotion of {second} started").inner_text()
    interruption = re.search(r"interruption (\S+)\.", notice).group(1)
    events = demo.call("GET", f"/api/agents/{agent}/interruptions?limit=50")["interruptions"]
    assert any(e["interruption_id"] == interruption and e["replica_id"] == second for e in events)


# --- admin pages on routes the API has ---

def test_admin_creates_a_client_whose_token_is_shown_once_then_regenerates_and_deactivates_it(page, demo):
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, "clients", "table[data-table=clients]")
    listed = demo.call("GET", "/api/admin/clients?limit=50", admin=True)["clients"]
    assert cells(page, "clients", "name") == [c["name"] for c in listed]
    page.fill("form[data-form=create-client] input[name=name]", "browser-made")
    page.click("form[data-form=create-client] button[type=submit]")
    token = page.wait_for_selector("[data-token-once] [data-token]").inner_text()
    me = demo.call("GET", "/api/client/validate", token=token)
    assert me["name"] == "browser-made"
    page.click("[data-token-once] button")
    assert page.query_selector("[data-token-once]") is None  # shown once, then gone
    row = f"table[data-table=clients] tr[data-row='{me['client_id']}']"
    page.wait_for_selector(row)
    page.click(f"{row} [data-action=regenerate]")
    new_token = page.wait_for_selector("[data-token-once] [data-token]").inner_text()
    assert new_token != token
    demo.call("GET", "/api/client/validate", token=token, expect=401)
    assert demo.call("GET", "/api/client/validate", token=new_token)["client_id"] == me["client_id"]
    page.click("[data-token-once] button")
    page.click(f"{row} [data-action=deactivate]")
    page.wait_for_selector(f"{row} td[data-col=status] >> text=inactive")
    assert demo.call("GET", f"/api/admin/clients/{me['client_id']}", admin=True)["status"] == "inactive"


def test_admin_sees_the_models_and_their_lifecycle(page, demo, tmp_path):
    models = demo.call("GET", "/api/admin/ml-models", admin=True)
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, "models", "table[data-table=models]")
    assert cells(page, "models", "version") == [v["version"] for v in models["versions"]]
    assert cells(page, "models", "status") == [v["status"] for v in models["versions"]]
    assert page.inner_text("[data-active-version]") == f"active: {models['active_version']}"
    # upload: a manifest that is not JSON is refused before anything is sent; the committed pair again is
    # the API's 409 (that version exists), shown as such; the same model under a new version is stored
    import json
    from pathlib import Path

    artifacts = Path(__file__).resolve().parents[2] / "ml" / "artifacts"
    form = "form[data-form=upload-model]"
    page.set_input_files(f"{form} input[name=artifact]", str(artifacts / "risk-model.joblib"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    page.set_input_files(f"{form} input[name=manifest]", str(bad))
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(".error >> text=The manifest is not valid JSON.")
    page.set_input_files(f"{form} input[name=manifest]", str(artifacts / "risk-model.json"))
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(".error >> text=already exists")
    manifest = json.loads((artifacts / "risk-model.json").read_text())
    manifest["version"] = "browser-test-1"
    renamed = tmp_path / "renamed.json"
    renamed.write_text(json.dumps(manifest))
    page.set_input_files(f"{form} input[name=manifest]", str(renamed))
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(".notice >> text=Version browser-test-1 uploaded")
    after = demo.call("GET", "/api/admin/ml-models", admin=True)
    assert "browser-test-1" in [v["version"] for v in after["versions"]]
    page.wait_for_selector("table[data-table=models] tr[data-row='browser-test-1']")
    assert cells(page, "models", "version") == [v["version"] for v in after["versions"]]
    # roll back: the API's answer is what the page says
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("[data-action=rollback]")
    # (the demo activated one version only: nothing to roll back to, the API's 409 is shown)
    page.wait_for_selector("[data-page=models] .error >> text=answered 409")


def test_admin_activity_lists_the_audit_log(page, demo):
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, "activity", "table[data-table=activity]")
    events = demo.call("GET", "/api/admin/activity?limit=100", admin=True)["events"]
    assert events
    assert cells(page, "activity", "message") == [e["message"] for e in events]
    assert cells(page, "activity", "event_type") == [e["event_type"] for e in events]


# --- error states and isolation ---

@pytest.mark.parametrize("status,body", [
    (404, json.dumps(error_body(unknown_route()))),  # the API's answer (infra/gateway_responses.py, local mode)
    (403, '{"message":"Missing Authentication Token"}'),  # API Gateway's own, before its gateway responses
], ids=["not-found", "api-gateway-default"])
def test_a_page_whose_route_is_missing_shows_a_clear_error_and_the_rest_still_works(page, demo, status, body):
    """The answer for a path no route matches, simulated here so that this stays true whichever routes exist."""
    page.route(re.compile(r".*/api/client/[^/]+/agents\?.*"), lambda route: route.fulfill(
        status=status, content_type="application/json", body=body))
    sign_in(page, "client", demo.token)
    goto(page, demo, "agents", ".error")
    assert "Not available on this server: the agents" in page.inner_text(".error")
    page.click("[data-nav=notifications]")
    page.wait_for_selector("table[data-table=notifications]")


def test_a_client_never_sees_another_clients_data(page, demo):
    other = demo.call("POST", "/api/admin/clients/create", {"name": "nosy-neighbour"}, admin=True)
    agent = _agent(demo, "manual-replica")
    active = next(i for i in demo.raw["instances"] if i["is_active"] and i["role"] == "primary")
    secrets = {agent, active["instance_id"], *(i["instance_id"] for i in demo.raw["instances"]),
               *(d["reason"] for d in demo.raw["decisions"] if d.get("reason"))}
    sign_in(page, "client", other["client_token"])

    def assert_nothing_of_a():
        text = page.inner_text("main")
        assert not [s for s in secrets if s and s in text and s not in page.url]

    goto(page, demo, "interruptions", "[data-table=interruptions]")
    assert page.inner_text("[data-table=interruptions]") == "No interruptions."
    goto(page, demo, "notifications", "[data-table=notifications]")
    assert page.inner_text("[data-table=notifications]") == "No notifications."
    assert_nothing_of_a()
    goto(page, demo, f"agents/{agent}", "[data-section=agent-decisions] .error")
    for section in ("agent-decisions", "agent-replicas", "agent-interruptions"):
        page.wait_for_selector(f"[data-section={section}] .error >> text=answered 404")
    assert_nothing_of_a()
    goto(page, demo, f"instances/{active['instance_id']}", "[data-section=force-switch] .error")
    page.wait_for_selector("[data-section=force-switch] .error >> text=answered 404")
    assert page.query_selector("form[data-form=force-switch]") is None
    assert_nothing_of_a()


def test_charts_draw_under_the_content_security_policy(page, demo):
    """Chart.js under ``script-src 'self'; style-src 'self'``: the overview's four charts from a charts answer
    of the contract's shape (served here by the browser, so this holds whichever routes the API has); any CSP
    violation is a console error, which fails the test (the ``page`` fixture)."""
    import json

    days = [f"2023-02-{d:02d}" for d in (21, 22, 23)]
    charts = {"savings_trend": [{"date": d, "baseline_cost": 3.0, "actual_cost": 2.0, "savings": 1.0,
                                 "spot_hours": 10.0, "ondemand_hours": 2.0} for d in days],
              "cost_vs_on_demand": [{"date": d, "actual_cost": 2.0, "baseline_cost": 3.0} for d in days],
              "mode_distribution": {"spot": 2, "ondemand": 1},
              "switches_per_day": [{"date": d, "count": n} for n, d in enumerate(days)]}
    page.route(re.compile(r".*/api/client/[^/]+/stats/charts$"), lambda route: route.fulfill(
        status=200, content_type="application/json", body=json.dumps(charts)))
    sign_in(page, "client", demo.token)
    page.wait_for_selector("[data-section=charts] canvas")
    for chart in ("savings-trend", "cost-vs-ondemand", "mode-mix", "switches-per-day"):
        drawn = page.eval_on_selector(f"[data-chart='{chart}'] canvas",
                                      "c => c.width > 0 && window.Chart.getChart(c) !== undefined")
        assert drawn, chart
