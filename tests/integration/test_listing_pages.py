"""Filtered listings page through a tenant's partition with a bounded number of reads a page
(``chalicelib.repositories.paging.read_page``): whatever the page size, the read sizes and the rows the filter drops,
following ``next_token`` lists every row the filter keeps once, newest first, and each page is full unless the
partition ran out or its reads did. Run on the embedded DynamoDB over a tenant's notifications (the ``unread``
filter), the listing security walk 17 found reading whole partitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chalicelib.repositories import activity, paging
from tests.integration.test_data_cleaner import _notification

T0 = datetime(2026, 12, 7, tzinfo=UTC)


@example(read=[True, False, False, False], limit=1, read_rows=6, page_reads=3)  # the limit reached mid-read
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(read=st.lists(st.booleans(), max_size=40), limit=st.integers(1, 8), read_rows=st.integers(1, 6),
       page_reads=st.integers(1, 3))
def test_following_the_tokens_lists_every_kept_row_once_in_order(aws_tables, monkeypatch, read, limit, read_rows,
                                                                 page_reads):
    monkeypatch.setattr(paging, "READ_ROWS", read_rows)
    monkeypatch.setattr(paging, "PAGE_READS", page_reads)
    client_id = f"cl-{uuid.uuid4().hex[:12]}"
    ids = [_notification(client_id, T0 - timedelta(minutes=i), is_read, f"n{i}") for i, is_read in enumerate(read)]
    expected = [nid for nid, is_read in zip(ids, read) if not is_read]  # newest first: minute 0 is the newest
    listed, token, pages = [], None, 0
    while pages == 0 or token:
        page = activity.notifications_page(client_id, limit, token, unread_only=True)
        assert len(page.items) <= limit and all(not row.is_read for row in page.items)
        if pages == 0 and limit + (page_reads - 1) * max(limit, read_rows) >= len(read):
            assert len(page.items) == min(limit, len(expected))  # its reads covered the partition: a full page
        listed += [row.notification_id for row in page.items]
        token, pages = page.next_token, pages + 1
        assert pages <= len(read) + 2
    assert listed == expected
