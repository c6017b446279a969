"""Admission of a client's request: token, client status and the per-client rate limit in one DynamoDB write.

Each client has a gate item (chalicelib/tables/rate_limits.py) holding a copy of its token hash and expiry,
status, legacy agent mode and rate-limit override (written in the same transaction as the client row), and
the request count of the current fixed window. One conditional UpdateItem on it checks the token (when the
request carries one), the status, legacy mode (agent routes with a client token) and the limit, and counts
the request: a refused request is not counted and writes nothing. The same update can join a transaction
(``Admission.add_to``) so a route that also checks the agent row needs one call in all.

The window count lives in ``window_start`` / ``requests``. The update either adds 1 to the current window
(``window_start`` is this window) or opens it (``window_start`` older): which one is guessed from the window
this container last counted the client in. A wrong guess (another container opened the window) costs one
GetItem and one retry, at most once per container, client and window. Once a client is over its limit,
this container answers 429 without calling DynamoDB until the window ends. Admin routes are not limited.

A client over its limit still gets its agents' critical reports through (``CRITICAL_ROUTES``: a switch report, a
command's result, a termination or interruption signal; a legacy agent never sends a refused one again, so its
record would be lost): each takes one request of the window's reserve (``RESERVE_FRACTION`` of the limit, counted
in ``reserve_used``, one more UpdateItem after the refusal), so a client flooding its own console or agents' polls
cannot lose its fleet's reports, and the reserve bounds what the critical routes themselves can add.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.transactions import TransactWrite

from components.rate_window import Window, window_of

from chalicelib.errors import ForbiddenError, TooManyRequestsError, UnauthorizedError
from chalicelib.repositories import clients
from chalicelib.repositories.dynamo import cancellation_codes, condition_failed, transaction_connection
from chalicelib.settings import get_settings
from chalicelib.tables.rate_limits import RateLimitTable, gate_key

_ADMITTED = "spotOptimizerAdmitted"  # request context: (client id, window start, the count it took) of its admission
_over: dict[str, int] = {}  # client id → end of the window it is over its limit in (this container)
_reserve_over: dict[str, int] = {}  # client id → end of the window its critical reports' reserve is used up in
_windows: dict[str, int] = {}  # client id → start of the window this container last counted it in
_RETRIES = 3

# Agent reports whose loss is permanent (a legacy agent never resends one that was refused): admitted past the
# limit from the window's reserve. Route templates as Chalice names them (request.context["resourcePath"]).
CRITICAL_ROUTES = frozenset({
    "/api/agents/{agent_id}/switch-report",
    "/api/agents/{agent_id}/commands/{command_id}/executed",
    "/api/agents/{agent_id}/mark-command-executed",
    "/api/agents/{agent_id}/termination",
    "/api/agents/{agent_id}/termination-imminent",
    "/api/agents/{agent_id}/rebalance-recommendation",
    "/api/agents/{agent_id}/create-emergency-replica",
})
RESERVE_FRACTION = 0.25  # of a client's limit: room for every agent's few critical reports in a mass interruption

LEGACY_OFF = ("agent routes need the agent's own credential (returned by a registration with a signed identity "
              "document); legacy agent mode is off for this client")


def wall_clock() -> datetime:
    """Real time (never local mode's replay clock: a limit is about requests per real second, a token expires
    in real time)."""
    return datetime.now(timezone.utc)


def stage_limit() -> int:
    """Requests per window of a client without overrides: ``RATE_LIMIT_PER_WINDOW``, or more when the default agent
    quota needs more (``RATE_LIMIT_PER_AGENT`` x ``QUOTA_MAX_AGENTS``)."""
    settings = get_settings()
    return max(settings.rate_limit_per_window, settings.rate_limit_per_agent * settings.quota_max_agents)


def limit_for(client) -> int:
    """The client's requests per window: its admin-set override, else the larger of the stage's limit and what
    its agent quota's fleet needs (a gate's ``fleet_rate_limit``; a client record's ``max_agents`` override)."""
    override = getattr(client, "rate_limit_per_window", None)
    if override:
        return int(override)
    fleet = (getattr(client, "fleet_rate_limit", None) if isinstance(client, RateLimitTable)
             else clients.fleet_rate_limit((getattr(client, "limits", None) or {}).get("max_agents")))
    return max(stage_limit(), int(fleet or 0))


class Admission:
    """One request of ``client_id`` to admit: with ``token_hash`` the request's client token must be the
    client's current, unexpired one; with ``legacy`` the client must run in legacy agent mode."""

    def __init__(self, client_id: str, *, token_hash: str | None = None, legacy: bool = False,
                 now: datetime | None = None, critical: bool = False) -> None:
        self.client_id, self.token_hash, self.legacy, self.critical = client_id, token_hash, legacy, critical
        self.now = now or wall_clock()
        self.now_s = self.now.timestamp()
        self.window: Window = window_of(self.now_s, get_settings().rate_limit_window_s)

    def short_circuit(self) -> None:
        """429 without a call when this container already saw the client over its limit in this window (for a
        critical report: over its reserve too)."""
        over = _reserve_over if self.critical else _over
        if over.get(self.client_id) == self.window.end:
            raise _refusal(self.window.retry_after(self.now_s))
        over.pop(self.client_id, None)

    def _checks(self):
        """The gate's token, status and legacy-mode conditions."""
        gate = RateLimitTable
        condition = gate.status == "active"
        if self.token_hash is not None:
            condition &= (gate.token_hash == self.token_hash) & (
                gate.token_expires_at.does_not_exist() | (gate.token_expires_at > self.now))
        if self.legacy:
            condition &= gate.legacy_agents == True  # noqa: E712 - a DynamoDB condition, not a Python test
        return condition

    def update(self) -> tuple[list, object]:
        """The gate update's actions and condition."""
        gate, condition = RateLimitTable, self._checks()
        if _windows.get(self.client_id) == self.window.start:
            # requests < limit_for(gate), spelled for DynamoDB (no max(): below either of the two is below both's max)
            default = (gate.requests < stage_limit()) | (gate.fleet_rate_limit.exists()
                                                          & (gate.requests < gate.fleet_rate_limit))
            under = (gate.rate_limit_per_window.exists() & (gate.requests < gate.rate_limit_per_window)) | (
                gate.rate_limit_per_window.does_not_exist() & default)
            return [gate.requests.add(1)], condition & (gate.window_start == self.window.start) & under
        return ([gate.window_start.set(self.window.start), gate.requests.set(1), gate.reserve_used.set(0)],
                condition & (gate.window_start.does_not_exist() | (gate.window_start < self.window.start)))

    def from_reserve(self, gate: RateLimitTable) -> bool:
        """Admit a critical report past the limit from the window's reserve (one conditional UpdateItem, with the
        same token/status/legacy checks): False when the reserve is used up too."""
        reserve, table = max(1, int(limit_for(gate) * RESERVE_FRACTION)), RateLimitTable
        try:
            RateLimitTable(gate_key(self.client_id)).update(
                actions=[table.reserve_used.add(1)],
                condition=self._checks() & (table.window_start == self.window.start)
                & (table.reserve_used.does_not_exist() | (table.reserve_used < reserve)))
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            return False
        return True

    def add_to(self, tx) -> None:
        """Join a TransactWrite (its outcome: ``admitted`` or ``refused``)."""
        actions, condition = self.update()
        tx.update(RateLimitTable(gate_key(self.client_id)), actions=actions, condition=condition)

    def admitted(self) -> None:
        _windows[self.client_id] = self.window.start

    def refused(self) -> bool:
        """The update's condition failed: raise the reason (401, 403, 429), or return False to retry (the window
        guess was wrong, or the gate had to be built from the client row), True when a critical report over the
        limit was admitted from the reserve."""
        try:
            gate = RateLimitTable.get(gate_key(self.client_id), consistent_read=True)
        except RateLimitTable.DoesNotExist:
            gate = None
        if gate is None or gate.status is None:
            if clients.ensure_gate(self.client_id):
                return False
            if self.token_hash is not None:
                raise UnauthorizedError("invalid client token")
            raise ForbiddenError("client is not active")
        if self.token_hash is not None and gate.token_hash != self.token_hash:
            raise UnauthorizedError("invalid client token")
        if self.token_hash is not None and gate.token_expires_at is not None and gate.token_expires_at <= self.now:
            raise UnauthorizedError("client token expired; ask an admin to regenerate it")
        if gate.status != "active":
            raise ForbiddenError("client is not active")
        if self.legacy and not gate.legacy_agents:
            raise ForbiddenError(LEGACY_OFF, code="agent_credential_required")
        stored = int(gate.window_start) if gate.window_start is not None else None
        if stored is not None and stored > self.window.start:  # another container's clock is a little ahead
            self.window = Window(stored, stored + (self.window.end - self.window.start))
            stored = self.window.start
        if stored == self.window.start:
            _windows[self.client_id] = stored
            if int(gate.requests or 0) >= limit_for(gate):
                if self.critical and self.from_reserve(gate):
                    return True
                _over[self.client_id] = self.window.end
                if self.critical:
                    _reserve_over[self.client_id] = self.window.end
                raise _refusal(self.window.retry_after(self.now_s))
        else:
            _windows.pop(self.client_id, None)
        return False


def admit(client_id: str, *, token_hash: str | None = None, legacy: bool = False, request=None,
          now: datetime | None = None) -> None:
    """Admit and count one request of ``client_id`` (one conditional UpdateItem); raises 401/403/429.

    With the Chalice ``request``, a request is admitted once however many paths call this."""
    if already_admitted(request, client_id):
        return
    admission = Admission(client_id, token_hash=token_hash, legacy=legacy, now=now, critical=is_critical(request))
    admission.short_circuit()
    for _ in range(_RETRIES):
        actions, condition = admission.update()
        try:
            RateLimitTable(gate_key(client_id)).update(actions=actions, condition=condition)
        except UpdateError as exc:
            if not condition_failed(exc):
                raise
            if admission.refused():
                mark_admitted(request, client_id, admission.window.start, counter="reserve_used")
                return
            continue
        admission.admitted()
        mark_admitted(request, client_id, admission.window.start)
        return
    raise TooManyRequestsError("the rate-limit window is changing, retry", retry_after=1)


def admit_with(check, client_id: str, *, token_hash: str | None = None, legacy: bool = False, request=None,
               now: datetime | None = None) -> bool:
    """``admit`` in one TransactWriteItems with ``check(tx)``, which adds one condition check of another item
    (the agent row): True when both held (admitted and counted), False when ``check``'s condition failed
    (nothing counted: the caller takes its full path, which admits on its own); 401/403/429 as ``admit``."""
    admission = Admission(client_id, token_hash=token_hash, legacy=legacy, now=now)
    admission.short_circuit()
    for _ in range(_RETRIES):
        try:
            with TransactWrite(connection=transaction_connection()) as tx:
                check(tx)
                admission.add_to(tx)
        except TransactWriteError as exc:
            codes = cancellation_codes(exc)
            if codes[:1] == ["ConditionalCheckFailed"]:
                return False
            if codes[1:2] != ["ConditionalCheckFailed"]:
                raise
            admission.refused()
            continue
        admission.admitted()
        mark_admitted(request, client_id, admission.window.start)
        return True
    raise TooManyRequestsError("the rate-limit window is changing, retry", retry_after=1)


def check(client, request=None, now: datetime | None = None) -> None:
    """Count one request of an already authenticated ``client`` (anything with ``client_id``): 429 over its
    limit, 403 when the client is no longer active."""
    admit(client.client_id, request=request, now=now)


def is_critical(request) -> bool:
    """The request is an agent report of ``CRITICAL_ROUTES`` (the reserve may admit it past the limit)."""
    context = getattr(request, "context", None)
    return isinstance(context, dict) and context.get("resourcePath") in CRITICAL_ROUTES


def already_admitted(request, client_id: str) -> bool:
    context = getattr(request, "context", None)
    return isinstance(context, dict) and (context.get(_ADMITTED) or (None,))[0] == client_id


def mark_admitted(request, client_id: str, window_start: int, *, counter: str = "requests") -> None:
    context = getattr(request, "context", None)
    if isinstance(context, dict):
        context[_ADMITTED] = (client_id, window_start, counter)


def refund(request) -> None:
    """Uncount the request's admission (an agent credential the fast path counted before its row refused
    it: a forged or stale credential must not use up its client's quota); a no-op for a request that was
    not admitted, or once its window is over."""
    context = getattr(request, "context", None)
    admitted = context.pop(_ADMITTED, None) if isinstance(context, dict) else None
    if admitted is None:
        return
    client_id, window_start, counter = admitted
    count = getattr(RateLimitTable, counter)  # the window's count, or its reserve's
    try:
        RateLimitTable(gate_key(client_id)).update(
            actions=[count.add(-1)], condition=(RateLimitTable.window_start == window_start) & (count > 0))
    except UpdateError as exc:
        if not condition_failed(exc):
            raise


def requests_in_window(client_id: str, now: datetime | None = None) -> int:
    """How many requests of the client the current window has counted (admin views, tests)."""
    window = window_of((now or wall_clock()).timestamp(), get_settings().rate_limit_window_s)
    try:
        gate = RateLimitTable.get(gate_key(client_id), consistent_read=True)
    except RateLimitTable.DoesNotExist:
        return 0
    return int(gate.requests or 0) if gate.window_start == window.start else 0


def _refusal(retry_after: int) -> TooManyRequestsError:
    return TooManyRequestsError(f"rate limit exceeded; retry in {retry_after} s", retry_after=retry_after)


def reset_container_state() -> None:
    """Forget this container's short-circuits and window guesses (tests; a new container starts empty)."""
    _over.clear()
    _reserve_over.clear()
    _windows.clear()
