"""Decision routes: legacy /decide, /switch-recommendation, /issue-switch-command; decision history;
current pool prices with their risk scores."""

from __future__ import annotations

from components.aws_regions import is_known_region
from components.command_tracker import CommandPriority
from components.decision_engine import ONDEMAND, DecisionAction
from components.pool_id import is_valid_instance_type

from chalicelib import catalogue, command_queue, decisions
from chalicelib.api.common import ApiBlueprint, client_request, ok, page_params, utcnow
from chalicelib.api.route_doc import Query
from chalicelib.api.views import command_view, decision_view, iso
from chalicelib.errors import ConflictError, ForbiddenError, InvalidInputError
from chalicelib.repositories import agents
from chalicelib.repositories import pools as pool_repo
from chalicelib.schemas.decisions import DecideRequest, IssueSwitchRequest

bp = ApiBlueprint(__name__)

LEGACY_DECISION_TYPE = {
    (True, True): "stay_spot", (False, True): "stay_ondemand",
    (True, False): "switch_to_spot", (False, False): "switch_to_ondemand",
}


def _request():
    return bp.current_request


def _evaluate(agent, now):
    try:
        return decisions.evaluate(agent, now)
    except decisions.NoMarketDataError as exc:
        raise ConflictError(str(exc), code="no_market_data") from exc


def _savings(evaluation) -> float | None:
    d, costs = evaluation.decision, evaluation.decision.expected_cost
    here = costs.get(evaluation.situation.current)
    there = costs.get(d.target)
    return None if here is None or there is None else round(here - there, 6)


@bp.route("/api/agents/{agent_id}/decide", methods=["POST"], response="DecideReply")
def decide(agent_id):
    """Run the decision policy now (legacy contract #1 shape); the decision is recorded."""
    client, _ = client_request(_request(), DecideRequest)
    agent = agents.require(client.client_id, agent_id)
    now = utcnow()
    evaluation = _evaluate(agent, now)
    d = evaluation.decision
    allowed = bool(agent.config.get("enabled") and agent.config.get("auto_switch_enabled"))
    decisions.record(agent, evaluation, "decide", now, per_bucket_s=decisions.ASKED_DECISION_BUCKET_S)
    return ok({"instance_id": agent.instance_id, "risk_score": d.risk,
               "recommended_action": d.action.value,
               "recommended_mode": "ondemand" if d.target == ONDEMAND else "spot",
               "recommended_pool_id": None if d.target == ONDEMAND else d.target,
               "recommended_standby_pool_id": d.standby,
               "expected_savings_per_hour": _savings(evaluation),
               "allowed": allowed and d.action is not DecisionAction.STAY, "reason": d.reason,
               "expected_cost": d.expected_cost})


@bp.route("/api/agents/{agent_id}/switch-recommendation", methods=["GET"], response="SwitchRecommendationReply")
def switch_recommendation(agent_id):
    """The engine's suggestion with alternatives (legacy contract #2 shape)."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id)
    now = utcnow()
    evaluation = _evaluate(agent, now)
    d = evaluation.decision
    stays = d.target == evaluation.situation.current
    auto = bool(agent.config.get("enabled") and agent.config.get("auto_switch_enabled"))
    alternatives = sorted((o for o in evaluation.options if o.price is not None
                           and o.pool_id != evaluation.situation.current), key=lambda o: o.price)[:5]
    decisions.record(agent, evaluation, "switch-recommendation", now, per_bucket_s=decisions.ASKED_DECISION_BUCKET_S)
    return ok({"decision_type": LEGACY_DECISION_TYPE[(d.target != ONDEMAND, stays)],
               "recommended_pool_id": None if d.target == ONDEMAND else d.target,
               "risk_score": d.risk, "expected_savings": _savings(evaluation),
               "confidence": None if d.risk is None else round(1 - d.risk, 4), "reason": d.reason,
               "auto_switch_enabled": auto, "will_auto_execute": auto and not stays,
               "current_pool": evaluation.situation.current,
               "alternative_pools": [{"pool_id": o.pool_id, "price": o.price, "risk": o.risk}
                                     for o in alternatives]})


@bp.route("/api/agents/{agent_id}/issue-switch-command", methods=["POST"], response="IssueSwitchReply")
def issue_switch_command(agent_id):
    """Queue an ML switch (priority 25, or 50 when urgent); 403 when auto-switch is off. The same switch sent again
    while the first is pending or running answers that command (``duplicate``): a legacy agent runs every switch
    it is handed, so a client's retry must not queue a second (``command_queue.queue_client_switch``)."""
    client, body = client_request(_request(), IssueSwitchRequest)
    agent = agents.require(client.client_id, agent_id)
    if not agent.config.get("auto_switch_enabled"):
        raise ForbiddenError("auto-switch is disabled for this agent", code="auto_switch_disabled")
    if not agent.instance_id:
        raise ConflictError("the agent has no instance", code="no_instance")
    now = utcnow()
    if body.target_mode is None:
        evaluation = _evaluate(agent, now)
        command = decisions.command_for(agent, evaluation.decision, now, trigger="ml_recommendation",
                                         requested=True)
        decisions.record(agent, evaluation, "issue-switch-command", now,
                         command_id=command.command_id if command else None,
                         per_bucket_s=decisions.ASKED_DECISION_BUCKET_S)
        if command is None:
            return ok({"success": True, "queued": False, "reason": evaluation.decision.reason})
        return ok({"success": True, "queued": True, "command": command_view(command)}, status=201)
    if body.target_pool_id and body.target_mode == "spot":
        command_queue.check_switch_target(agent, body.target_pool_id, field="target_pool_id")
    command, duplicate = command_queue.queue_client_switch(
        agent, target_mode=body.target_mode, target_pool_id=body.target_pool_id, now=now,
        trigger="ml_recommendation", priority=CommandPriority.ML_URGENT if body.urgent else CommandPriority.ML_NORMAL)
    return ok({"success": True, "queued": True, "duplicate": duplicate, "command": command_view(command)},
              status=201)


@bp.route("/api/client/agents/{agent_id}/decisions", methods=["GET"], response="DecisionsReply")
def decision_history(agent_id):
    """An agent's decisions with their reasons, newest first (paginated)."""
    client, _ = client_request(_request())
    agent = agents.require(client.client_id, agent_id, allow_deleted=True)
    limit, token = page_params(_request())
    page = decisions.history(agent.agent_id, limit, token)
    return ok({"decisions": [decision_view(d) for d in page.items], "next_token": page.next_token})


@bp.route("/api/client/pools", methods=["GET"], response="PoolsReply",
          query=[Query("region", required=True), Query("instance_type", required=True)])
def pool_risk():
    """Current price, on-demand price and interruption risk of every pool of a type in a region."""
    client, _ = client_request(_request())
    params = _request().query_params or {}
    region, instance_type = params.get("region"), params.get("instance_type")
    if not region or not instance_type:
        raise InvalidInputError("region and instance_type are required", field="region" if not region
                                else "instance_type")
    # Both make the index key queried: an unknown region or a malformed type is the caller's mistake (400), and an
    # over-long one a key DynamoDB refuses with a ValidationException (a 500).
    if not is_known_region(region):
        raise InvalidInputError("region is not an AWS region", field="region")
    if len(instance_type) > 64 or not is_valid_instance_type(instance_type):
        raise InvalidInputError("instance_type is not an EC2 instance type", field="instance_type")
    ondemand = catalogue.ondemand_price(instance_type, region)  # AWS's list price; agents cannot set it
    return ok({"pools": [
        {"pool_id": p.pool_id, "az": p.az, "price": None if p.price is None else float(p.price),
         "price_at": iso(p.at), "ondemand_price": ondemand,
         "risk": p.risk_for(client.client_id), "risk_at": iso(p.risk_at), "risk_source": p.risk_source}
        for p in (p.seen_by(client.client_id) for p in pool_repo.pools_of_type(region, instance_type))]})
