"""The console's account pages: a client's Account page (the AWS accounts the product acts in, the ExternalId its
roles must require, its quotas) and the operator's page of one client (its quota overrides, legacy agent mode,
rate limit and AWS account bindings), each against the API's answers and round-tripping to the API."""

from __future__ import annotations

import pytest

from tests.browser.conftest import cells, goto, sign_in

pytestmark = pytest.mark.slow

LIMIT_NAMES = ("max_agents", "max_instances", "max_standby_usd_per_hour", "max_switches_per_agent_per_day",
               "max_instance_vcpus", "allow_accelerated_types", "allowed_instance_families")


def _shown(name: str, value) -> str:
    if name == "allow_accelerated_types":
        return "yes" if value else "no"
    if name == "allowed_instance_families":
        return ", ".join(value) if value else "any"
    return "—" if value is None else str(value)


def test_a_client_sees_its_external_id_bound_accounts_and_quotas(page, demo):
    accounts = demo.call("GET", "/api/client/accounts")
    limits = demo.call("GET", "/api/client/limits")["limits"]
    sign_in(page, "client", demo.token)
    goto(page, demo, "account", "[data-section=accounts] [data-external-id]")
    assert page.inner_text("[data-section=accounts] [data-external-id]") == accounts["external_id"]
    assert accounts["external_id"].startswith("so-")
    if accounts["accounts"]:
        assert cells(page, "accounts", "account_id") == [a["account_id"] for a in accounts["accounts"]]
    else:
        assert page.inner_text("[data-table=accounts]") == "No AWS account bound yet."
    page.wait_for_selector("table[data-table=limits]")
    assert cells(page, "limits", "value") == [_shown(name, limits[name]) for name in LIMIT_NAMES]


def test_the_operator_sets_a_clients_quotas_legacy_mode_and_rate_limit(page, demo):
    client = demo.call("POST", "/api/admin/clients/create", {"name": "quota-tuned"}, admin=True)
    cid = client["client_id"]
    default = demo.call("GET", f"/api/admin/clients/{cid}/limits", admin=True)["limits"]
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, "clients", "table[data-table=clients]")
    page.click(f"table[data-table=clients] tr[data-row='{cid}'] td[data-col=name] a")
    form = "form[data-form=limits]"
    page.wait_for_selector(form)
    # blank fields: the default, shown as the placeholder and as the effective value
    assert page.get_attribute(f"{form} input[name=max_agents]", "placeholder") == str(default["max_agents"])
    page.fill(f"{form} input[name=max_agents]", "3")
    page.fill(f"{form} input[name=max_switches_per_agent_per_day]", "5")
    page.fill(f"{form} input[name=allowed_instance_families]", "m5, c5")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(f"{form} .notice >> text=Quotas saved.")
    stored = demo.call("GET", f"/api/admin/clients/{cid}/limits", admin=True)
    assert {k: stored["overrides"][k] for k in ("max_agents", "max_switches_per_agent_per_day",
                                                 "allowed_instance_families", "max_instances")} == {
        "max_agents": 3, "max_switches_per_agent_per_day": 5, "allowed_instance_families": ["m5", "c5"],
        "max_instances": None}
    page.wait_for_selector(f"{form} [data-effective=max_switches_per_agent_per_day] >> text=5")
    # emptied: back to the default
    page.fill(f"{form} input[name=max_agents]", "")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(f"{form} .notice >> text=Quotas saved.")
    stored = demo.call("GET", f"/api/admin/clients/{cid}/limits", admin=True)
    assert stored["overrides"]["max_agents"] is None and stored["limits"]["max_agents"] == default["max_agents"]
    # a value the API refuses is its 400, shown, and nothing changes
    page.fill(f"{form} input[name=max_switches_per_agent_per_day]", "-1")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(f"{form} .error >> text=answered 400")
    assert demo.call("GET", f"/api/admin/clients/{cid}/limits",
                     admin=True)["overrides"]["max_switches_per_agent_per_day"] == 5
    # legacy agent mode and the client's own rate limit
    page.click("[data-action=legacy-agents]")
    page.wait_for_selector("[data-stat=legacy_agents] .stat-value >> text=yes")
    page.fill("form[data-form=rate-limit] input[name=requests_per_window]", "300")
    page.click("form[data-form=rate-limit] button[type=submit]")
    page.wait_for_selector("[data-stat=effective_rate_limit] .stat-value >> text=300")
    stored = demo.call("GET", f"/api/admin/clients/{cid}", admin=True)
    assert (stored["legacy_agents"], stored["rate_limit_per_window"]) == (True, 300)


def test_the_operator_binds_and_unbinds_a_clients_aws_account(page, demo):
    client = demo.call("POST", "/api/admin/clients/create", {"name": "account-bound"}, admin=True)
    cid, account = client["client_id"], "210987654321"
    page.on("dialog", lambda dialog: dialog.accept())
    sign_in(page, "admin", demo.admin_key)
    goto(page, demo, f"clients/{cid}", "form[data-form=bind-account]")
    form = "form[data-form=bind-account]"
    # a role in another account than the one named: the API's 400, shown, nothing bound
    page.fill(f"{form} input[name=account_id]", account)
    page.fill(f"{form} input[name=role_arn]", "arn:aws:iam::123456789012:role/SpotOptimizer")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("[data-section=client-accounts] .error >> text=answered 400")
    assert demo.call("GET", f"/api/admin/clients/{cid}", admin=True)["aws_accounts"] == []
    page.fill(f"{form} input[name=role_arn]", f"arn:aws:iam::{account}:role/SpotOptimizer")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector(f"table[data-table=client-accounts] tr[data-row='{account}']")
    assert demo.call("GET", f"/api/admin/clients/{cid}", admin=True)["aws_accounts"] == [account]
    page.click(f"table[data-table=client-accounts] tr[data-row='{account}'] [data-action=unbind]")
    page.wait_for_selector("[data-section=client-accounts] [data-table=client-accounts] >> text=No AWS account bound.")
    assert demo.call("GET", f"/api/admin/clients/{cid}", admin=True)["aws_accounts"] == []
