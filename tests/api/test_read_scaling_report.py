"""Every client and admin read route answers a client with a long history (2,000 closed instances, 90 days of
switches, 1,000 notifications, 300 closed standbys) with a 2xx, as one with none. With READ_SCALING_REPORT=1 it also
prints each route's DynamoDB calls and items read for both (the scale walk's numbers: counts, never times)."""

from __future__ import annotations

import os

import pytest

from tests.api.read_scaling_support import History, history, live_fleet, reads

pytestmark = pytest.mark.slow

LONG = History(instances=2000, switch_days=90, switches_a_day=5, notifications=1000, unread=5, replicas=300)


def _routes(client_id, agent_id, instance_id):
    c = f"/api/client/{client_id}"
    return [("client", "GET", "/api/client/validate"),
            ("client", "GET", c), ("client", "GET", f"{c}/replicas"), ("client", "GET", f"{c}/replicas?status=all"),
            ("client", "GET", f"{c}/switch-history"),
            ("client", "GET", f"{c}/switch-history?instance_id={instance_id}"),
            ("client", "GET", f"{c}/stats/charts"), ("client", "GET", f"{c}/agents"),
            ("client", "GET", f"{c}/agents/history"), ("client", "GET", f"{c}/agents/decisions"),
            ("client", "GET", f"{c}/instances"), ("client", "GET", f"{c}/instances?status=all"),
            ("client", "GET", f"/api/client/instances/{instance_id}/pricing"),
            ("client", "GET", f"/api/client/instances/{instance_id}/metrics"),
            ("client", "GET", f"/api/client/instances/{instance_id}/available-options"),
            ("client", "GET", f"{c}/savings"), ("client", "GET", "/api/client/interruptions"),
            ("client", "GET", f"/api/agents/{agent_id}/interruptions"),
            ("client", "GET", f"/api/client/agents/{agent_id}/decisions"),
            ("client", "GET", f"/api/agents/{agent_id}/replicas"),
            ("client", "GET", f"/api/agents/{agent_id}/replicas?include_terminated=true&limit=20"),
            ("client", "GET", f"/api/agents/{agent_id}/replicas?status=launching"),
            ("client", "GET", f"/api/agents/{agent_id}/sef-status"),
            ("client", "GET", f"/api/agents/{agent_id}/replica-config"),
            ("client", "GET", f"/api/client/instances/{instance_id}/price-history?days=7&interval=hour"),
            ("client", "GET", "/api/notifications"), ("client", "GET", "/api/notifications?unread=true"),
            ("client", "POST", "/api/notifications/mark-all-read"),
            ("admin", "GET", f"/api/admin/clients/{client_id}"), ("admin", "GET", f"/api/admin/clients/{client_id}/limits"),
            ("admin", "GET", "/api/admin/clients?limit=50"), ("admin", "GET", "/api/admin/activity"),
            ("admin", "GET", "/api/admin/stats"), ("admin", "GET", "/api/admin/system-health"),
            ("admin", "GET", "/api/admin/agents"), ("admin", "GET", "/api/admin/instances")]


def _tenant(make_tenant, size):
    client_id, caller = make_tenant()
    ids = live_fleet(caller)
    history(client_id, ids[0][0], size)
    return client_id, caller, ids[0]


def test_every_read_route_answers_a_long_history(make_tenant, admin, capsys):
    table = {}
    for label, size in (("empty", History()), ("long", LONG)):
        client_id, caller, (agent_id, instance_id) = _tenant(make_tenant, size)
        for who, method, path in _routes(client_id, agent_id, instance_id):
            by = caller if who == "client" else admin
            by.get("/api/client/validate") if who == "client" else None  # warm the token and window
            with reads() as seen:
                status, _ = by.call(method, path)
            assert status in (200, 201), (path, status)
            key = path.replace(client_id, "{c}").replace(agent_id, "{a}").replace(instance_id, "{i}")
            table.setdefault(f"{method} {key}", {})[label] = seen
    if not os.environ.get("READ_SCALING_REPORT"):
        return
    with capsys.disabled():
        print()
        for route, seen in table.items():
            print(f"{route:70s} | empty {str(seen['empty']):60s} | long {seen['long']}")
