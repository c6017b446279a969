"""Fuzz every route the Chalice app registers: random JSON bodies, query strings and path parameters,
with a valid client token and admin key (or none), must never get a 5xx (issue #12).

The routes come from ``app.routes``, so a new route is fuzzed without touching this file. Values lean
toward what broke before (deep nesting, odd digits, year 9999, numbers DynamoDB cannot store, long
non-ASCII text) and toward the schemas' own field names, so bodies get past the first field check.
"""

from __future__ import annotations

import inspect
import json
import re
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

import chalicelib.schemas.admin
import chalicelib.schemas.agents
import chalicelib.schemas.clients
import chalicelib.schemas.decisions
import chalicelib.schemas.interruptions
import chalicelib.schemas.replicas
from app import app
from tests.conftest import Caller

pytestmark = pytest.mark.slow

ROUTES = sorted((path, method) for path, methods in app.routes.items() for method in methods)
EXAMPLES_PER_ROUTE = 12

_SCHEMA_MODULES = (chalicelib.schemas.admin, chalicelib.schemas.agents, chalicelib.schemas.clients,
                   chalicelib.schemas.decisions, chalicelib.schemas.interruptions, chalicelib.schemas.replicas)
FIELD_NAMES = sorted({name for module in _SCHEMA_MODULES for _, cls in inspect.getmembers(module, inspect.isclass)
                      if issubclass(cls, BaseModel) for name in cls.model_fields})

NASTY_STRINGS = ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00Z", "²", "١٢",
                 "9" * 60, "-1", "0", "true", "NaN", "i-0123456789abcdef0", "m5.large", "eu-west-1a",
                 "m5.large.eu-west-1a", "spot", "online", "ready", "termination-notice", "€" * 3000, "😀" * 1200,
                 "arn:aws:iam::123456789012:role/x", "\x00", "../../etc/passwd", ""]
NASTY_NUMBERS = [1e-200, 1e300, -1e-131, 10 ** 39, 2 ** 63, -1, 0, 0.031, 100, 86_400_001]

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(NASTY_NUMBERS) | st.text(max_size=20) | st.sampled_from(NASTY_STRINGS))
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(keys, inner, max_size=5), max_leaves=12)
nested = st.integers(min_value=30, max_value=3000).map(lambda n: '{"a":' * n + "1" + "}" * n)
raw_bodies = (st.dictionaries(keys, json_values, max_size=8).map(json.dumps)
              | json_values.map(lambda v: json.dumps(v, ensure_ascii=False)) | nested
              | st.binary(max_size=64) | st.sampled_from(['{"a":', "[" * 2000, "", "null", '{"x": 1e999}']))
query = st.dictionaries(st.sampled_from(["limit", "next_token", "instance_id", "unread", "status", "pool_id", "format", "mode", "search",
                                         "region", "instance_type", "az"]) | st.text(min_size=1, max_size=8),
                        st.text(max_size=30) | st.sampled_from(NASTY_STRINGS[:12]), max_size=3)
path_values = st.text(min_size=1, max_size=300) | st.sampled_from(NASTY_STRINGS[:14] + ["a" * 5000])


def _url(template: str, params: dict[str, str], query_params: dict[str, str]) -> str:
    path = re.sub(r"\{(\w+)\}", lambda m: quote(params[m.group(1)], safe=""), template)
    return path + ("?" + urlencode(query_params) if query_params else "")


@pytest.mark.parametrize("template,method", ROUTES, ids=[f"{m} {p}" for p, m in ROUTES])
def test_route_never_answers_5xx(api, admin_key, tenant_with_agent, failover_machine, template, method):
    """(The failover state machine is deployed, as in AWS: starting one is not a client-input path.)"""
    client_id, caller, agent_id, registered = tenant_with_agent
    real = {"agent_id": agent_id, "instance_id": registered["instance_id"], "client_id": client_id}
    names = re.findall(r"\{(\w+)\}", template)

    @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(params=st.fixed_dictionaries({n: (st.just(real[n]) | path_values) if n in real else path_values
                                         for n in names}),
           query_params=query, raw=raw_bodies, auth=st.sampled_from(["both", "none", "client"]))
    def fuzz(params, query_params, raw, auth):
        who = Caller(api.http, token=None if auth == "none" else caller.token,
                     admin=admin_key if auth == "both" else None)
        status, body = who.call(method, _url(template, params, query_params), raw=raw)
        assert status < 500, (method, template, params, query_params, raw[:200], status, body)

    fuzz()
