"""IMDSv2 client: the instance's identity and its spot notices.

IMDSv2 only (a session token from ``PUT /latest/api/token``): instances launched with
``HttpTokens=required`` reject v1 GETs, and the token protects against SSRF reaching the metadata.
Timeouts are short (2 s) because the metadata service is local; a few quick retries absorb the
throttling IMDS applies under bursts. A 401 means the token expired or the service restarted: one
fresh token, then the request again.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

import requests

log = logging.getLogger("spot_agent.imds")

TOKEN_TTL_S = 21600
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


class ImdsError(RuntimeError):
    """The metadata service did not answer usefully after the retries."""


class ImdsClient:
    """A small IMDSv2 client; ``get`` answers None for 404 (the metadata item does not exist)."""

    def __init__(self, endpoint: str = "http://169.254.169.254", *, timeout: float = 2.0, retries: int = 3,
                 backoff_s: float = 0.2, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic):
        self.endpoint = endpoint.rstrip("/")
        self.timeout, self.retries, self.backoff_s = timeout, max(1, retries), backoff_s
        self.session = session or requests.Session()
        self._sleep, self._monotonic = sleep, monotonic
        self._token: str | None = None
        self._token_expires = 0.0

    # ---- transport ---------------------------------------------------------------------------

    def _with_retries(self, what: str, call: Callable[[], requests.Response]) -> requests.Response:
        last: Exception | None = None
        for attempt in range(self.retries):
            try:
                response = call()
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = exc
            else:
                if response.status_code < 500 and response.status_code != 429:
                    return response
                last = ImdsError(f"{what}: HTTP {response.status_code}")
            if attempt + 1 < self.retries:
                self._sleep(self.backoff_s * (2 ** attempt))
        raise ImdsError(f"{what} failed after {self.retries} attempts: {last}") from last

    def token(self, *, refresh: bool = False) -> str:
        """The session token (cached until a minute before its TTL runs out)."""
        if not refresh and self._token and self._monotonic() < self._token_expires:
            return self._token
        response = self._with_retries("IMDS token", lambda: self.session.put(
            f"{self.endpoint}/latest/api/token", headers={TTL_HEADER: str(TOKEN_TTL_S)}, timeout=self.timeout))
        if response.status_code != 200 or not response.text:
            raise ImdsError(f"IMDS token: HTTP {response.status_code}")
        self._token = response.text.strip()
        self._token_expires = self._monotonic() + TOKEN_TTL_S - 60
        return self._token

    def get(self, path: str) -> str | None:
        """Text of ``/latest/<path>``; None when IMDS answers 404."""
        url = f"{self.endpoint}/latest/{path.lstrip('/')}"
        for refreshed in (False, True):
            token = self.token(refresh=refreshed)
            response = self._with_retries(f"IMDS {path}", lambda t=token: self.session.get(
                url, headers={TOKEN_HEADER: t}, timeout=self.timeout))
            if response.status_code == 401 and not refreshed:
                log.info("IMDS token rejected; fetching a new one")
                continue
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise ImdsError(f"IMDS {path}: HTTP {response.status_code}")
            return response.text
        raise ImdsError(f"IMDS {path}: token rejected twice")

    def _json(self, path: str) -> dict[str, Any] | None:
        text = self.get(path)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ImdsError(f"IMDS {path}: not JSON: {text[:100]!r}") from exc
        if not isinstance(value, dict):
            raise ImdsError(f"IMDS {path}: expected an object, got {text[:100]!r}")
        return value

    # ---- what the agent reads ----------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """The instance's identity (the legacy agent's IMDS paths) plus its region.

        ``public_ipv4`` is None for instances without one. ``mode`` is derived from
        ``instance-life-cycle``: ``spot`` → spot, anything else (``on-demand``, ``scheduled``) → ondemand.
        """
        md = "meta-data/"
        instance_id = self.get(md + "instance-id")
        if not instance_id:
            raise ImdsError("IMDS has no instance-id")
        az = self.get(md + "placement/availability-zone") or ""
        region = self.get(md + "placement/region") or _region_of(az)
        lifecycle = self.get(md + "instance-life-cycle")
        return {
            "instance_id": instance_id.strip(),
            "instance_type": (self.get(md + "instance-type") or "").strip(),
            "az": az.strip(),
            "region": region.strip() if region else None,
            "ami_id": (self.get(md + "ami-id") or "").strip() or None,
            "local_ipv4": (self.get(md + "local-ipv4") or "").strip() or None,
            "public_ipv4": (self.get(md + "public-ipv4") or "").strip() or None,
            "instance_life_cycle": (lifecycle or "").strip() or None,
            "mode": "spot" if (lifecycle or "").strip() == "spot" else "ondemand",
        }

    def signed_identity(self) -> tuple[str | None, str | None]:
        """The instance identity document (its JSON text, verbatim: the signature covers those bytes) and
        its base64 RSA-SHA256 signature; (None, None) where IMDS has none."""
        document = self.get("dynamic/instance-identity/document")
        signature = self.get("dynamic/instance-identity/signature")
        if not document or not signature:
            return None, None
        return document, signature.strip()

    def instance_action(self) -> dict[str, Any] | None:
        """The two-minute notice ``{"action": "terminate"|"stop"|"hibernate", "time": ...}``, or None."""
        return self._json("meta-data/spot/instance-action")

    def rebalance(self) -> dict[str, Any] | None:
        """The rebalance recommendation ``{"noticeTime": ...}``, or None."""
        return self._json("meta-data/events/recommendations/rebalance")


def _region_of(az: str) -> str | None:
    """us-east-1a → us-east-1 (older IMDS versions lack placement/region)."""
    az = az.strip()
    return az[:-1] if az and az[-1].isalpha() else None
