"""What an agent's report may weigh: never an item past DynamoDB's 400 KB, never seconds of CPU.

GIVEN a tenant with a registered agent
WHEN a report carries what fits the body limit (256 KiB) but grows once stored (non-ASCII text, which the
     audit log's JSON metadata stores escaped: an emoji is 4 bytes sent and 12 stored) or once explained
     (thousands of malformed ids, each named in a warning)
THEN it is answered 200 and recorded (metadata past ``METADATA_MAX_BYTES`` as a truncated marker), not a 500
     from DynamoDB's ValidationException (moto enforces the item limit too);
AND thousands of malformed elements are each dropped and named (their cost: ``python -m bench.hot_paths``).
"""

from __future__ import annotations

import json

from chalicelib.repositories.activity import METADATA_MAX_BYTES, bounded_metadata
from chalicelib.schemas.agents import CleanupReportRequest
from tests.api._support import recent_audit_events

ITEM_LIMIT = 400 * 1024


def _events_of(agent_id: str, event_type: str) -> list:
    return recent_audit_events(event_type, lambda e: e.agent_id == agent_id)


def test_a_cleanup_report_of_non_ascii_ids_is_recorded_not_a_500(tenant_with_agent):
    """240 KB of emoji ids (under the body limit, every string under its 16 KB bound) were ~720 KB of escaped
    JSON in one audit event: PutItem failed with ValidationException, answered 500."""
    _, caller, agent_id, _ = tenant_with_agent
    raw = json.dumps({"snapshots": {"deleted": ["😀" * 4000 for _ in range(15)]}}, ensure_ascii=False).encode()
    assert 200 * 1024 < len(raw) < 256 * 1024
    status, reply = caller.call("POST", f"/api/agents/{agent_id}/cleanup-report", raw=raw)
    assert status == 200, reply
    assert reply["deleted_snapshots"] == 15
    [event] = _events_of(agent_id, "cleanup_report")
    assert event.metadata["truncated"] is True and event.metadata["stored_bytes"] > ITEM_LIMIT
    assert len(json.dumps(event.metadata)) <= METADATA_MAX_BYTES


def _malformed_cleanup() -> dict:
    """5,000 malformed elements (15 KB): every list at its length bound, every element an integer."""
    return {"snapshots": {"deleted": [1] * 1000, "failed": [1] * 1000},
            "amis": {"deleted_amis": [1] * 1000, "deleted_snapshots": [1] * 1000, "failed": [1] * 1000}}


def test_dropping_5000_malformed_elements_keeps_the_report():
    """Every malformed element is dropped and named, nothing else (the walk's CPU, once ~3 s for these 15 KB of a
    quadratic comparison, is measured by ``python -m bench.hot_paths``: docs/benchmarks.md, "Hot paths")."""
    report = CleanupReportRequest.model_validate(_malformed_cleanup())
    assert len(report.warnings) == 5000 and report.snapshots.deleted == [] and report.amis.failed == []
    assert len(set(report.warnings)) == 5000  # each element named once, by its own path


def test_a_cleanup_report_of_5000_malformed_elements_is_recorded_with_its_warnings_truncated(tenant_with_agent):
    """Each dropped element is named in a warning: ~380 KB of them, at the item limit, in one audit event."""
    _, caller, agent_id, _ = tenant_with_agent
    status, reply = caller.post(f"/api/agents/{agent_id}/cleanup-report", _malformed_cleanup())
    assert status == 200, reply
    assert len(reply["warnings"]) == 5000 and reply["failed_count"] == 0
    [event] = _events_of(agent_id, "report_warnings")
    assert event.metadata["truncated"] is True and event.metadata["stored_bytes"] > 300 * 1024
    assert len(json.dumps(event.metadata)) <= METADATA_MAX_BYTES


def test_metadata_under_the_bound_is_stored_as_it_is():
    small = {"warnings": ["x: dropped"] * 10, "note": "é😀"}
    assert bounded_metadata(small) is small
    assert bounded_metadata(None) is None


def test_metadata_over_the_bound_becomes_a_marker_that_fits_an_item():
    for filler in ("😀", '"', "\\", "\x01", "a"):  # the characters whose stored (escaped) form is longest
        big = {"ids": [filler * 4000] * 100}
        marker = bounded_metadata(big)
        assert marker["truncated"] is True and marker["stored_bytes"] == len(json.dumps(big))
        assert len(json.dumps(marker)) <= METADATA_MAX_BYTES
        assert json.dumps(big).startswith(marker["preview"])
