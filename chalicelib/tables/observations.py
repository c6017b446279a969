"""Capacity observations: what the product itself saw about a pool (components.capacity).

One partition per pool; the sort key ``<iso time>#<kind>#<id>`` orders a pool's observations by time,
so a pool's history over a time range is one Query. An agent's report (a failed switch's error code, a switch
report's launch: a client's claim, not our own sighting) sorts after them under ``R#<client id>#<iso time>#…``,
so it is read only for that client's placements (``repositories.observations.for_pools``). ``id`` is derived from the source event (the
EventBridge event id, the command id, the replica id), and the time from that event or from a set-once
timestamp of the row it changed, so a redelivered or retried source writes the same key again.
"""

from __future__ import annotations

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, OptionalText, table_name


class ObservationTable(Model):
    """One capacity observation of one pool."""

    class Meta(BaseMeta):
        table_name = table_name("observations")

    pool_id = UnicodeAttribute(hash_key=True)
    observation_key = UnicodeAttribute(range_key=True)  # [R#<client>#]<at, ISO µs Z>#<kind>#<event id>
    kind = UnicodeAttribute()  # components.capacity.ObservationKind value
    at = UTCDateTimeAttribute()
    value = NumberAttribute(null=True)  # placement score (1..10)
    code = OptionalText()  # EC2 error code of a refusal
    source = UnicodeAttribute()  # failover, replica-coordinator, sentinel, agent, ...
    event_id = UnicodeAttribute()
    client_id = OptionalText()
    agent_id = OptionalText()
    instance_id = OptionalText()
    reported_by = OptionalText()  # the client whose agent claimed it (a report, not our own sighting): its evidence only
    recorded_at = UTCDateTimeAttribute()
    expires_at = TTLAttribute()
