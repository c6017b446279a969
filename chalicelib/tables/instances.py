"""EC2 instances we know of, primaries and standbys. Keyed by EC2 id: the sentinel's instance → agent map."""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.expressions.update import Action
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.tables.base import BaseMeta, DecimalAttribute, OptionalText, SparseIndex, SparseKeyed, table_name


class InstancesByClientIndex(GlobalSecondaryIndex):
    """A client's instances, newest first when queried backwards."""

    class Meta:
        index_name = "instances-by-client"
        projection = AllProjection()

    client_id = UnicodeAttribute(hash_key=True)
    installed_at = UTCDateTimeAttribute(range_key=True)


class InstancesByAgentIndex(GlobalSecondaryIndex):
    """An agent's instance history."""

    class Meta:
        index_name = "instances-by-agent"
        projection = AllProjection()

    agent_id = UnicodeAttribute(hash_key=True)
    installed_at = UTCDateTimeAttribute(range_key=True)


class LiveInstancesByClientIndex(GlobalSecondaryIndex):
    """A client's active instances only (sparse: ``live_client_id`` is set while the row is active)."""

    class Meta:
        index_name = "live-instances-by-client"
        projection = AllProjection()

    live_client_id = UnicodeAttribute(hash_key=True)
    installed_at = UTCDateTimeAttribute(range_key=True)


class InstanceTable(SparseKeyed, Model):
    """One EC2 instance and what it costs; ``client_id`` is checked on every tenant read.

    ``live_client_id == client_id`` exactly while ``is_active`` (the key of the sparse ``live`` index), kept by
    ``SparseKeyed``: every put derives it, which also covers a row put anew for another client (a proven
    take-over); an update that sets ``is_active`` (or ``client_id``, which none does today) writes the key with it
    (``close_actions``), and one that does not is refused before it is sent."""

    class Meta(BaseMeta):
        table_name = table_name("instances")

    instance_id = UnicodeAttribute(hash_key=True)
    client_id = UnicodeAttribute()
    agent_id = UnicodeAttribute()
    instance_type = OptionalText()
    region = OptionalText()
    az = OptionalText()
    ami_id = OptionalText()
    mode = UnicodeAttribute(default="unknown")
    pool_id = OptionalText()
    role = UnicodeAttribute(default="primary")  # primary | standby
    replica_id = OptionalText()
    lifecycle = OptionalText()  # spot | ondemand, as EC2 launched it
    spot_price = DecimalAttribute(null=True)
    ondemand_price = DecimalAttribute(null=True)
    is_active = BooleanAttribute(default=True)
    installed_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    last_switch_at = UTCDateTimeAttribute(null=True)
    terminated_at = UTCDateTimeAttribute(null=True)
    # When its agent's termination report first closed it (set once, with the close): the time its client's
    # notification is keyed on, so a repeated report writes the one the first report may not have got to.
    termination_reported_at = UTCDateTimeAttribute(null=True)
    # The AWS account a signed identity document proved the instance runs in (None: the registering agent's
    # word only, a legacy registration): an unproven claim yields to another client's proven registration.
    proven_account_id = OptionalText()
    # When its agent's deletion released it to its client (closed by ``agents.soft_delete``): the client's workload
    # from then on, which the product no longer manages nor terminates (the cleanup's orphan pass keeps it, though
    # the product launched it: a failover's replacement, a promoted standby). A registration puts the row anew.
    released_at = UTCDateTimeAttribute(null=True)
    # ``client_id`` while ``is_active`` (absent once closed): the key of ``live``, the index of LIVE_INSTANCES.
    live_client_id = OptionalText()

    by_client = InstancesByClientIndex()
    by_agent = InstancesByAgentIndex()
    live = LiveInstancesByClientIndex()

    sparse_key = "live_client_id"
    sparse_sources = frozenset({"is_active", "client_id"})

    def sparse_value(self) -> str | None:
        return self.client_id if self.is_active else None

    @classmethod
    def close_actions(cls) -> list[Action]:
        """The update actions that close a row: inactive, and out of the live index."""
        return [cls.is_active.set(False), cls.live_client_id.remove()]


LIVE_INSTANCES = SparseIndex(name="live-instances", model=InstanceTable,
                             belongs=lambda: InstanceTable.is_active == True)  # noqa: E712
