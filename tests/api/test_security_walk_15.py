"""Security walk 15: the ground the earlier walks left — the operator's model registry (what a manifest's version
becomes: a registry key, an S3 folder, a route's path segment), query parameters that look like ids but carry more,
the operator's routes with an agent's credential, cross-site reads of the API and its console (CORS, headers on
every kind of answer), ids that differ from another row's only by case or script, and an agent replaying its
sibling's command results. Each test is one attack; its docstring says what it tries and what holds (and, when it
found something, what happened before the fix)."""

from __future__ import annotations

import base64

import pytest

from chalicelib import model_store
from chalicelib.settings import get_settings
from tests.api._support import assert_error, diff_snapshots, snapshot_tables
from tests.api.test_models_legacy import ARTIFACT, manifest_for
from tests.conftest import aws_client


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
