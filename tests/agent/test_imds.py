"""The IMDSv2 client against the fake metadata service (real HTTP)."""

from __future__ import annotations

import socket

import pytest
import requests

from spot_agent.imds import ImdsClient, ImdsError
from localmode.fake_imds import FakeImds

IDENTITY = {"instance_id": "i-0123456789abcdef0", "instance_type": "m5.large", "az": "us-east-1c",
            "ami_id": "ami-0abc", "local_ipv4": "10.0.0.7", "instance_life_cycle": "spot"}


@pytest.fixture
def imds():
    with FakeImds(IDENTITY) as fake:
        yield fake


def test_identity_is_read_with_a_session_token_and_v1_requests_are_refused(imds):
    # GIVEN an IMDS that requires tokens WHEN the client reads the identity
    client = ImdsClient(imds.url)
    ident = client.identity()
    # THEN every field comes back; no public IP is None, the region is derived, spot → mode spot
    assert ident == {"instance_id": "i-0123456789abcdef0", "instance_type": "m5.large", "az": "us-east-1c",
                     "region": "us-east-1", "ami_id": "ami-0abc", "local_ipv4": "10.0.0.7",
                     "public_ipv4": None, "instance_life_cycle": "spot", "mode": "spot"}
    # AND one token served every GET; a GET without a token (IMDSv1) is a 401
    assert [r for r in imds.requests if r[0] == "PUT"] == [("PUT", "/latest/api/token", False)]
    assert all(valid for method, _, valid in imds.requests if method == "GET")
    assert requests.get(f"{imds.url}/latest/meta-data/instance-id", timeout=2).status_code == 401


def test_on_demand_lifecycle_is_mode_ondemand():
    with FakeImds({**IDENTITY, "instance_life_cycle": "on-demand"}) as fake:
        assert ImdsClient(fake.url).identity()["mode"] == "ondemand"


def test_an_expired_token_is_refreshed_once_on_401(imds):
    client = ImdsClient(imds.url)
    assert client.get("meta-data/instance-id") == "i-0123456789abcdef0"
    # WHEN the service forgets the token (restart, expiry)
    imds.expire_tokens()
    # THEN the next read fetches a new token and succeeds
    assert client.get("meta-data/instance-type") == "m5.large"
    assert sum(1 for r in imds.requests if r[0] == "PUT") == 2


def test_notices_are_none_on_404_and_json_when_present(imds):
    client = ImdsClient(imds.url)
    assert client.instance_action() is None and client.rebalance() is None
    imds.set_instance_action("terminate", "2030-01-01T00:02:00Z")
    imds.set_rebalance("2030-01-01T00:00:00Z")
    assert client.instance_action() == {"action": "terminate", "time": "2030-01-01T00:02:00Z"}
    assert client.rebalance() == {"noticeTime": "2030-01-01T00:00:00Z"}
    imds.clear_notices()
    assert client.instance_action() is None and client.rebalance() is None


def test_a_stopped_service_fails_after_three_attempts_with_backoff():
    fake = FakeImds(IDENTITY).start()
    url = fake.url
    fake.stop()
    slept: list[float] = []
    client = ImdsClient(url, retries=3, backoff_s=0.1, sleep=slept.append)
    with pytest.raises(ImdsError, match="after 3 attempts"):
        client.identity()
    assert slept == [0.1, 0.2]


@pytest.mark.timeout(20)
def test_a_hanging_service_times_out_instead_of_blocking_the_agent():
    # GIVEN a socket that accepts connections but never answers
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = ImdsClient(url, timeout=0.2, retries=2, backoff_s=0.0)
        # THEN the read gives up with an error (the test's timeout guards against a hang)
        with pytest.raises(ImdsError, match="after 2 attempts"):
            client.instance_action()
