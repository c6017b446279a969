"""Per-client API rate limit: a fixed-window counter in DynamoDB that holds across Lambda containers.

One conditional UpdateItem per request (``ADD requests 1`` if the window's count is still below the
limit) counts the request and refuses it in the same call; refused requests are not counted. Once a
client is over its limit, this container answers 429 without calling DynamoDB until the window ends.
Items expire by TTL a few windows later. Called right after authentication from
``api.common.client_request`` and ``api.common.agent_request``; admin routes are not limited.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from pynamodb.exceptions import UpdateError

from components.rate_window import window_of

from chalicelib.errors import TooManyRequestsError
from chalicelib.settings import get_settings
from chalicelib.tables.rate_limits import RateLimitTable

TTL_WINDOWS = 2  # an item outlives its window by this many windows (DynamoDB TTL deletes lazily)

_COUNTED = "spotOptimizerRateLimited"  # marker in the request context: already counted
_over: dict[str, int] = {}  # client id → end of the window it is over its limit in (this container)


def wall_clock() -> datetime:
    """Real time (never local mode's replay clock: a limit is about requests per real second)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Subject:
    """Who is counted when only the client id is at hand (an agent credential names its client but the
    client row is not read: the stage default limit applies, on the same counter as the client's)."""

    client_id: str
    rate_limit_per_window: int | None = None


def limit_for(client) -> int:
    """The client's requests per window: its admin-set override, else the stage default."""
    override = getattr(client, "rate_limit_per_window", None)
    return int(override) if override else get_settings().rate_limit_per_window


def check(client, request=None, now: datetime | None = None) -> None:
    """Count one request of ``client`` (a ClientRecord); TooManyRequestsError (429) over its limit.

    With the Chalice ``request``, a request is counted once however many auth paths call this."""
    context = getattr(request, "context", None)
    if isinstance(context, dict):
        if context.get(_COUNTED) == client.client_id:
            return
        context[_COUNTED] = client.client_id
    settings = get_settings()
    now_s = (now or wall_clock()).timestamp()
    window = window_of(now_s, settings.rate_limit_window_s)
    client_id = client.client_id
    if _over.get(client_id) == window.end:
        raise _refusal(window.retry_after(now_s))
    _over.pop(client_id, None)
    limit = limit_for(client)
    row = RateLimitTable(f"{client_id}#{window.start}")
    try:
        row.update(actions=[RateLimitTable.requests.add(1),
                            RateLimitTable.expires_at.set(
                                datetime.fromtimestamp(window.end + TTL_WINDOWS * (window.end - window.start),
                                                       tz=timezone.utc))],
                   condition=RateLimitTable.requests.does_not_exist() | (RateLimitTable.requests < limit))
    except UpdateError as exc:
        if getattr(exc, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise
        _over[client_id] = window.end
        raise _refusal(window.retry_after(now_s)) from None


def _refusal(retry_after: int) -> TooManyRequestsError:
    return TooManyRequestsError(f"rate limit exceeded; retry in {retry_after} s", retry_after=retry_after)


def reset_container_state() -> None:
    """Forget this container's short-circuits (tests; a new container starts empty)."""
    _over.clear()
