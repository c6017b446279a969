"""What the demo prints and draws, computed only from what the tables recorded during the run.

``collect`` reads the client's rows (instances, interruptions, switches, decisions, price points) and its
savings figures from the savings repository (cost and on-demand baseline: the roll-up job's numbers, the
ones the console shows); ``summarize`` turns them into cost, on-demand baseline, downtime and counts; ``html`` draws the report
(inline SVG, no JavaScript, opens offline). The demo's test recomputes the summary from the raw rows.
"""

from __future__ import annotations

import html as html_lib
from datetime import datetime, timedelta

from components.timeutil import parse_iso

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def collect(client_id: str, start: datetime, end: datetime) -> dict:
    """Every row the summary and the charts need (admin-side batch reads, never a request path)."""
    from chalicelib.repositories import observations
    from chalicelib.tables.observations import ObservationTable
    from chalicelib.tables import (AgentTable, DecisionTable, InstanceTable, InterruptionTable, PoolTable,
                                   PricePointTable, SwitchTable)

    agents = list(AgentTable.query(client_id))
    instances = list(InstanceTable.by_client.query(client_id))
    pools = sorted({i.pool_id for i in instances if i.pool_id} | {p.pool_id for p in PoolTable.scan()})
    points = {pid: [(_iso(p.ts), float(p.price)) for p in PricePointTable.query(
        pid, PricePointTable.ts.between(start - timedelta(hours=1), end))] for pid in pools}
    from chalicelib import catalogue

    # AWS's list price (the product's on-demand price source: agents cannot set it)
    ondemand = {p.pool_id: od for p in PoolTable.scan() if (od := catalogue.ondemand_price(p.instance_type, p.region))}
    decisions = [d for a in agents for d in DecisionTable.query(a.agent_id)]
    since = (start - observations.BACKOFF_LOOKBACK).strftime(observations.KEY_TIME)
    mine = observations.reported_prefix(client_id)  # the demo client's agents' reports count for its placements
    seen = [row for pid in pools for lower, upper in ((since, "9999"), (mine + since, mine + "9999"))
            for row in ObservationTable.query(pid, ObservationTable.observation_key.between(lower, upper))]
    return {
        "ec2_live": _ec2_live(client_id, pools),
        "start": _iso(start), "end": _iso(end),
        "savings": savings_figures(client_id, [a.agent_id for a in agents], end),
        "agents": [{"agent_id": a.agent_id, "logical_agent_id": a.logical_agent_id, "status": a.status,
                    "mode": "manual-replica" if a.config.manual_replica_enabled else "auto-switch"} for a in agents],
        "instances": [{"instance_id": i.instance_id, "agent_id": i.agent_id, "role": i.role, "mode": i.mode,
                       "pool_id": i.pool_id, "installed_at": _iso(i.installed_at),
                       "terminated_at": _iso(i.terminated_at), "updated_at": _iso(i.updated_at),
                       "is_active": i.is_active} for i in instances],
        "interruptions": [{"agent_id": e.agent_id, "instance_id": e.instance_id, "pool_id": e.pool_id,
                           "signal_type": e.signal_type, "source": e.source, "status": e.status,
                           "response_action": e.response_action, "new_instance_id": e.new_instance_id,
                           "new_pool_id": e.new_pool_id, "new_lifecycle": e.new_lifecycle,
                           "detected_at": _iso(e.detected_at), "termination_time": _iso(e.termination_time),
                           "decided_at": _iso(e.decided_at), "replacement_ready_at": _iso(e.replacement_ready_at),
                           "traffic_moved_at": _iso(e.traffic_moved_at), "failover_time_ms": e.failover_time_ms,
                           "error": e.error}
                          for e in InterruptionTable.query(client_id)],
        "switches": [{"agent_id": s.agent_id, "old_pool_id": s.old_pool_id, "new_pool_id": s.new_pool_id,
                      "new_mode": s.new_mode, "initiated_at": _iso(s.initiated_at), "trigger": s.trigger}
                     for s in SwitchTable.query(client_id)],
        "decisions": [{"agent_id": d.agent_id, "decided_at": _iso(d.decided_at), "action": d.action,
                       "target": d.target, "standby": d.standby, "reason": d.reason} for d in decisions],
        "price_points": points, "ondemand": ondemand,
        "observations": [{"pool_id": o.pool_id, "kind": o.kind, "at": o.at.timestamp(), "code": o.code,
                          "source": o.source, "recorded_at": o.recorded_at.timestamp()} for o in seen],
    }


def _ec2_live(client_id: str, pools: list[str]) -> list[str]:
    """The instances the product launched for the client that are still live in (embedded) EC2, every region
    of the pools: what the client pays for, whatever the tables say."""
    from chalicelib.aws import ec2
    from components.pool_id import parse_pool_id, region_of_az

    regions = sorted({region_of_az(parse_pool_id(pid)[1]) for pid in pools})
    return sorted(i.instance_id for region in regions for i in ec2.managed_instances(region, client_id=client_id))


def savings_figures(client_id: str, agent_ids: list[str], end: datetime) -> dict:
    """The client's and each agent's cost and on-demand baseline as the savings repository has them (the
    roll-up job's rows): the one source the console shows too, so the demo prints the same numbers."""
    from chalicelib.repositories import savings

    return {"client": savings.client_summary(client_id, end),
            "agents": {agent_id: savings.agent_summary(client_id, agent_id, end) for agent_id in agent_ids},
            "hours": savings.hourly(client_id, end - timedelta(days=400), end)}


def _lifetime(inst: dict, end: datetime) -> tuple[datetime, datetime]:
    """When an instance row ran: install → termination (or deactivation; or the end of the run)."""
    begin = parse_iso(inst["installed_at"])
    if inst["terminated_at"]:
        stop = parse_iso(inst["terminated_at"])
    elif not inst["is_active"]:
        stop = parse_iso(inst["updated_at"])
    else:
        stop = end
    return begin, max(begin, min(stop, end))


def _next_primary(raw: dict, event: dict, after: datetime, end: datetime) -> datetime:
    """When the agent next had a primary instance after a failover that moved no traffic (or the end):
    ``after`` itself when another primary was already serving then (the warned instance was one the
    agent had moved off, e.g. a switched-from instance its old agent had not terminated yet)."""
    others = [i for i in raw["instances"] if i["agent_id"] == event["agent_id"] and i["role"] == "primary"
              and i["instance_id"] != event["instance_id"]]
    if any(parse_iso(i["installed_at"]) <= after < _lifetime(i, end)[1] for i in others):
        return after
    starts = [parse_iso(i["installed_at"]) for i in others if parse_iso(i["installed_at"]) >= after]
    return min(starts, default=end)


def agent_costs(raw: dict) -> dict[str, float]:
    """What each logical agent's instances (standbys included) cost over the run (savings repository)."""
    figures = (raw.get("savings") or {}).get("agents", {})
    return {a["logical_agent_id"]: float(figures.get(a["agent_id"], {}).get("total_actual_cost", 0.0))
            for a in raw["agents"]}


def ondemand_stretches(raw: dict, end: datetime) -> dict[str, dict]:
    """Per logical agent: hours its primary ran on demand and the longest uninterrupted such stretch
    (the union of its on-demand primaries' lifetimes, overlaps during a hand-over counted once)."""
    out = {}
    for agent in raw["agents"]:
        spans = sorted(_lifetime(i, end) for i in raw["instances"]
                       if i["agent_id"] == agent["agent_id"] and i["role"] == "primary" and i["mode"] == "ondemand")
        merged: list[list[datetime]] = []
        for begin, stop in spans:
            if merged and begin <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([begin, stop])
        hours = [(b - a).total_seconds() / 3600 for a, b in merged]
        out[agent["logical_agent_id"]] = {"mode": agent["mode"], "hours": round(sum(hours), 2),
                                          "longest_h": round(max(hours, default=0.0), 2)}
    return out


def backoff_violations(raw: dict) -> tuple[int, list[dict]]:
    """Every launch choice of a spot pool made while the observations table had the pool in capacity
    back-off: a decision moving the primary there (``switch_pool``, ``to_spot``) or a failover's new
    replacement, or a standby placement (``place_standby``, its ``standby``), against ``DEFAULT_BACKOFF``
    (``components.capacity``). Promoting a standby that already runs is no
    launch and is not checked. Only the pool's observations known before the choice count: an observation
    is dated by its event (``at``: a warning carries the step's time, a launch the time of the choice that
    made it) and written at ``recorded_at`` (the replay clock, which runs on during a step), so it is known
    from the later of the two; within one demo step warnings and choices interleave. Returns how many
    choices were checked and the violations."""
    from components.capacity import DEFAULT_BACKOFF, CapacityObservation, ObservationKind

    by_pool: dict[str, list] = {}
    for o in raw.get("observations", []):
        by_pool.setdefault(o["pool_id"], []).append((max(o["at"], o.get("recorded_at", o["at"])), CapacityObservation(
            o["pool_id"], ObservationKind(o["kind"]), o["at"], code=o["code"], source=o["source"])))
    choices = [(d["decided_at"], d["target"], f"decision {d['action']}", d["agent_id"])
               for d in raw["decisions"] if d["action"] in ("switch_pool", "to_spot") and d["target"] in raw["price_points"]]
    choices += [(d["decided_at"], d["standby"], f"decision {d['action']}", d["agent_id"])
                for d in raw["decisions"] if d["action"] == "place_standby" and d.get("standby")]
    choices += [(e["decided_at"], e["new_pool_id"], f"failover {e['response_action']}", e["agent_id"])
                for e in raw["interruptions"] if e["decided_at"] and e["new_pool_id"] and e["new_lifecycle"] != "ondemand"
                and e["response_action"] not in ("promoted-existing-replica", "returned-to-spot")]
    violations = []
    for at, pool_id, what, agent_id in choices:
        now = parse_iso(at).timestamp()
        until = DEFAULT_BACKOFF.until([o for written, o in by_pool.get(pool_id, []) if written < now], now)
        if until is not None:
            violations.append({"at": at, "pool_id": pool_id, "by": what, "agent_id": agent_id,
                               "blocked_until": datetime.fromtimestamp(until, parse_iso(at).tzinfo).isoformat()})
    return len(choices), violations


def decision_examples(decisions: list[dict], moves: int = 3) -> list[dict]:
    """The first decision of each kind of move (up to ``moves`` kinds, in the order they came), then the first
    stay: one of each, so no example repeats another."""
    in_time = sorted(decisions, key=lambda d: d["decided_at"])
    firsts: dict[str, dict] = {}
    for d in in_time:
        if d["action"] != "stay" and len(firsts) < moves:
            firsts.setdefault(d["action"], d)
    stay = next((d for d in in_time if d["action"] == "stay"), None)
    return [{"at": d["decided_at"], "action": d["action"], "target": d["target"], "reason": d["reason"]}
            for d in [*firsts.values(), *([stay] if stay else [])]]


def summarize(raw: dict) -> dict:
    """Cost vs all-on-demand, interruptions, failovers and their timings, downtime, switches, decisions."""
    start, end = parse_iso(raw["start"]), parse_iso(raw["end"])
    # Cost and baseline: the savings repository's figures (the roll-up job integrated them), as the console
    # shows them. Baseline = the workload's instance-hours on demand (hand-over overlaps included, standbys not:
    # they are a cost only, docs/ARCHITECTURE.md "Savings").
    client = (raw.get("savings") or {}).get("client", {})
    cost, baseline = float(client.get("total_actual_cost", 0.0)), float(client.get("total_baseline_cost", 0.0))
    downtime, failovers = 0.0, []
    for e in sorted(raw["interruptions"], key=lambda e: e["detected_at"]):
        if e["signal_type"].startswith("rebalance") or e["signal_type"] == "planned-return":
            continue  # a planned return (make-before-break) is no interruption: counted below
        deadline = parse_iso(e["termination_time"]) if e["termination_time"] else parse_iso(e["detected_at"])
        served = parse_iso(e["traffic_moved_at"]) if e["traffic_moved_at"] else _next_primary(raw, e, deadline, end)
        down = max(0.0, (served - deadline).total_seconds())
        downtime += down
        failovers.append({**e, "downtime_s": down})
    actions: dict[str, int] = {}
    for f in failovers:
        actions[f["response_action"] or f["status"]] = actions.get(f["response_action"] or f["status"], 0) + 1
    timings = sorted(f["failover_time_ms"] for f in failovers if f["failover_time_ms"] is not None)
    moves = [d for d in raw["decisions"] if d["action"] != "stay"]
    stretches = ondemand_stretches(raw, end)
    checked, violations = backoff_violations(raw)
    return {
        "window": f"{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC",
        "agents": len(raw["agents"]), "agents_online": sum(a["status"] == "online" for a in raw["agents"]),
        "instances": len(raw["instances"]),
        # launched by the product and still running in EC2 though the tables closed them: paid for, unseen
        "ec2_unaccounted": sorted(set(raw.get("ec2_live", ())) - {i["instance_id"] for i in raw["instances"] if i["is_active"]}),
        "cost_usd": round(cost, 2), "ondemand_usd": round(baseline, 2),
        "cost_pct_of_ondemand": round(100 * cost / baseline, 1) if baseline else None,
        "interruptions": len(failovers), "failover_actions": actions,
        "failover_ms_p50": timings[len(timings) // 2] if timings else None,
        "failover_ms_max": timings[-1] if timings else None,
        "downtime_s": round(downtime, 1), "switches": len(raw["switches"]),
        "returns_to_spot": sum(e["response_action"] == "returned-to-spot" for e in raw["interruptions"]),
        "decisions": len(raw["decisions"]), "decision_moves": len(moves),
        "decision_examples": decision_examples(raw["decisions"]),
        "agent_cost_usd": {name: round(c, 2) for name, c in agent_costs(raw).items()},
        "savings_usd": round(float(client.get("total_savings", 0.0)), 2),
        "ondemand_primary": stretches,
        "ondemand_primary_hours": round(sum(s["hours"] for s in stretches.values()), 2),
        "backoff_choices_checked": checked, "backoff_violations": violations,
        "warnings_past_deadline": sum(f["downtime_s"] > 0 for f in failovers),
    }


def print_summary(s: dict) -> None:
    actions = ", ".join(f"{n} {a}" for a, n in sorted(s["failover_actions"].items())) or "none"
    print(f"""
Summary (computed from what the tables recorded)
  replayed window        {s['window']}
  agents / instances     {s['agents']} agents ({s['agents_online']} online at the end), {s['instances']} instances over the run (standbys included); {len(s.get('ec2_unaccounted', ()))} running in EC2 that the tables closed
  cost                   ${s['cost_usd']:,.2f} vs ${s['ondemand_usd']:,.2f} all on-demand ({s['cost_pct_of_ondemand']}% of on-demand; savings ${s.get('savings_usd', 0.0):,.2f}, as the console shows them)
  interruptions          {s['interruptions']} warnings handled: {actions}
  failover               warning → traffic moved p50 {s['failover_ms_p50']} ms, max {s['failover_ms_max']} ms (product processing; EC2 boot is instant in the embedded AWS)
  downtime               {s['downtime_s']} s past the two-minute deadlines
  switches               {s['switches']} recorded; {s['decisions']} decisions, {s['decision_moves']} of them to move
  returns to spot        {s.get('returns_to_spot', 0)} on-demand primaries handed over to their spot standby
  decisions (examples)   the first of each kind, with the reason it recorded""")
    for d in s["decision_examples"]:
        print(f"    {d['at'][:16]} {d['action']:>12} → {d['target']}: {d['reason']}")
    stretches = s["ondemand_primary"]
    print(f"  on-demand primaries    {s['ondemand_primary_hours']} h in all; per agent (hours, longest stretch): "
          + ", ".join(f"{name} {v['hours']} h / {v['longest_h']} h" for name, v in sorted(stretches.items())))
    print(f"  capacity back-off      {len(s['backoff_violations'])} pools chosen inside their back-off window "
          f"({s['backoff_choices_checked']} choices checked against the observations table)")
    for v in s["backoff_violations"][:5]:
        print(f"    {v['at'][:16]} {v['by']} → {v['pool_id']} (in back-off until {v['blocked_until'][:16]})")
    if s.get("versus_backtest"):
        print(versus_text(s["versus_backtest"]))
    print()


def versus_text(v: dict) -> str:
    """The cost-vs-backtest table and the PASS/FAIL line, as printed."""
    lines = [f"\nCost vs the backtest on the same window and pools (evaluated {v['eval_start'][:16]} → "
             f"{v['eval_end'][:16]}, boot {v['boot_s']:.0f} s; see localmode/demo/compare.py)",
             f"  {'policy':<20}{'auto-switch $':>15}{'$/agent-h':>11}{'all agents $':>15}{'$/agent-h':>11}"]
    for r in v["rows"]:
        lines.append(f"  {r['name']:<20}{r['auto_usd']:>15,.2f}{r['auto_per_agent_h']:>11.3f}"
                     f"{r['all_usd']:>15,.2f}{r['all_per_agent_h']:>11.3f}")
    verdict = "PASS" if v["passed"] else "FAIL"
    lines.append(f"  {verdict}: the product's auto-switch agents cost {v['ratio_to_ours']} × backtest ours "
                 f"(limit {v['tolerance']}; {v['agents_auto']} auto-switch of {v['agents_all']} agents, "
                 f"{v['hours']} h each)")
    return "\n".join(lines)


# --- the HTML report ---------------------------------------------------------------------------

def _svg_chart(series: list[tuple[str, str, list[tuple[float, float]], float]], marks: list[float],
               x0: float, x1: float, title: str, ylabel: str, width=960, height=300) -> str:
    """Lines ``(label, color, [(x, y)], stroke width)`` with vertical marks, as an SVG string."""
    ys = [y for _, _, pts, _ in series for _, y in pts] or [0.0, 1.0]
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.05 or 1.0
    left, right, top, bottom = 60, 170, 30, 30
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y):
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><text x="{left}" y="18" font-size="14" font-weight="bold">{html_lib.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>']
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = y0 + frac * (y1 - y0)
        out.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
    out.append(f'<text x="14" y="{top + ph / 2}" transform="rotate(-90 14 {top + ph / 2})">{ylabel}</text>')
    for day in range(int((x1 - x0) // 86400) + 1):
        x = x0 + day * 86400
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + ph}" stroke="#eee"/>'
                   f'<text x="{sx(x):.1f}" y="{height - 10}" text-anchor="middle">day {day}</text>')
    for m in marks:
        out.append(f'<line x1="{sx(m):.1f}" x2="{sx(m):.1f}" y1="{top}" y2="{top + ph}" stroke="#e00" '
                   f'stroke-dasharray="3,3" stroke-width="1"/>')
    for i, (label, color, pts, w) in enumerate(series):
        if len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="{w}" points="{path}"/>')
        if label:
            out.append(f'<rect x="{left + pw + 10}" y="{top + 14 * i}" width="10" height="3" fill="{color}"/>'
                       f'<text x="{left + pw + 24}" y="{top + 14 * i + 5}">{html_lib.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def charts(raw: dict) -> tuple[str, str]:
    """(price chart with each agent's pool highlighted, cumulative cost vs on-demand), both SVG."""
    start, end = parse_iso(raw["start"]), parse_iso(raw["end"])
    x0, x1 = start.timestamp(), end.timestamp()
    marks = [parse_iso(e["detected_at"]).timestamp() for e in raw["interruptions"]
             if not e["signal_type"].startswith("rebalance")]
    series = []
    for _pool, pts in sorted(raw["price_points"].items()):
        clipped = [(parse_iso(t).timestamp(), p) for t, p in pts if x0 <= parse_iso(t).timestamp() <= x1]
        series.append(("", "#bbb", clipped[:: max(1, len(clipped) // 400)], 1))
    names = {a["agent_id"]: a["logical_agent_id"] for a in raw["agents"]}
    for n, (agent_id, name) in enumerate(sorted(names.items(), key=lambda kv: kv[1])):
        color, first = COLORS[n % len(COLORS)], True
        for inst in sorted((i for i in raw["instances"] if i["agent_id"] == agent_id and i["role"] == "primary"),
                           key=lambda i: i["installed_at"]):
            begin, stop = _lifetime(inst, end)
            pts = [(parse_iso(t).timestamp(), p) for t, p in raw["price_points"].get(inst["pool_id"] or "", [])
                   if begin <= parse_iso(t) <= stop] if inst["mode"] == "spot" else []
            series.append((name if first else "", color, pts, 3))
            first = False
    prices = _svg_chart(series, marks, x0, x1, "Spot price per pool ($/h); thick: each agent's pool while it ran "
                        "there; dashed red: interruption warnings", "$/h")
    # The savings repository's hourly rows (what the summary and the console show), accumulated hour by hour.
    ours, baseline, paid, base = [(x0, 0.0)], [(x0, 0.0)], 0.0, 0.0
    for row in (raw.get("savings") or {}).get("hours", []):
        paid, base = paid + row["actual_cost"], base + row["baseline_cost"]
        at = min(x1, parse_iso(row["hour"] + ":00:00Z").timestamp() + 3600)
        ours.append((at, paid))
        baseline.append((at, base))
    cost = _svg_chart([("Spot Optimizer", "#1f77b4", ours, 2.5), ("all on-demand", "#555", baseline, 1.5)], marks,
                      x0, x1, "Cumulative cost ($) vs the workload on demand (hourly, savings roll-up; standbys a cost only); "
                      "dashed red: interruption warnings", "$")
    return prices, cost


def _versus_html(v: dict | None) -> str:
    if not v:
        return ""
    rows = "".join(f"<tr><td>{html_lib.escape(r['name'])}</td><td>{r['auto_usd']:,.2f}</td>"
                   f"<td>{r['auto_per_agent_h']:.3f}</td><td>{r['all_usd']:,.2f}</td><td>{r['all_per_agent_h']:.3f}</td></tr>"
                   for r in v["rows"])
    verdict = "PASS" if v["passed"] else "FAIL"
    return (f"<h2>Cost vs the backtest (same window, same pools)</h2><p>Backtest evaluated {v['eval_start'][:16]} → "
            f"{v['eval_end'][:16]} UTC on each agent's region pools, from the pool it started in, boot {v['boot_s']:.0f} s "
            f"(how: <code>localmode/demo/compare.py</code>). <b>{verdict}</b>: the product's auto-switch agents cost "
            f"<b>{v['ratio_to_ours']} ×</b> backtest <code>ours</code> (limit {v['tolerance']}).</p>"
            f"<table><tr><th>policy</th><th>auto-switch agents $</th><th>$/agent-h</th><th>all agents $</th>"
            f"<th>$/agent-h</th></tr>{rows}</table>")


def html(raw: dict, summary: dict) -> str:
    prices, cost = charts(raw)
    rows = "".join(
        f"<tr><td>{html_lib.escape(f['detected_at'][:19])}</td><td>{html_lib.escape(f['pool_id'] or '')}</td>"
        f"<td>{html_lib.escape(f['source'])}</td><td>{html_lib.escape(f['response_action'] or f['status'])}</td>"
        f"<td>{html_lib.escape(f['new_pool_id'] or f['new_lifecycle'] or '')}</td>"
        f"<td>{f['failover_time_ms'] if f['failover_time_ms'] is not None else ''}</td></tr>"
        for f in sorted(raw["interruptions"], key=lambda e: e["detected_at"]))
    decisions = "".join(f"<li><b>{html_lib.escape(d['action'])}</b> → {html_lib.escape(d['target'])}: "
                        f"{html_lib.escape(d['reason'])}</li>" for d in summary["decision_examples"])
    s = summary
    agents = "".join(f"<tr><td>{html_lib.escape(name)}</td><td>{v['mode']}</td>"
                     f"<td>{s['agent_cost_usd'].get(name, 0.0):,.2f}</td><td>{v['hours']}</td><td>{v['longest_h']}</td></tr>"
                     for name, v in sorted(s["ondemand_primary"].items()))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Spot Optimizer demo report</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1000px}}td,th{{padding:2px 8px;text-align:left}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f4f4f4}}</style></head><body>
<h1>Spot Optimizer demo — p3.2xlarge, 9 AZs, {html_lib.escape(s['window'])}</h1>
<p><b>{s['agents']} agents</b>, cost <b>${s['cost_usd']:,.2f}</b> vs ${s['ondemand_usd']:,.2f} all on-demand
(<b>{s['cost_pct_of_ondemand']}%</b>); {s['interruptions']} interruption warnings handled
({html_lib.escape(', '.join(f'{n} {a}' for a, n in sorted(s['failover_actions'].items())))});
downtime past the deadlines {s['downtime_s']} s; {s['switches']} switches; {s['decisions']} decisions.</p>
{prices}
{cost}
{_versus_html(s.get("versus_backtest"))}
<h2>On-demand primaries and capacity back-off</h2>
<p>{s['ondemand_primary_hours']} primary hours on on-demand in all; {len(s['backoff_violations'])} pools chosen inside
their back-off window ({s['backoff_choices_checked']} choices checked against the observations table);
{s['warnings_past_deadline']} interruption warnings handled past their deadline.</p>
<table><tr><th>agent</th><th>mode</th><th>cost $</th><th>on-demand h</th><th>longest on-demand stretch h</th></tr>{agents}</table>
<h2>Decisions (examples)</h2><ul>{decisions}</ul>
<h2>Interruptions</h2><table><tr><th>warning</th><th>pool</th><th>source</th><th>handled by</th><th>now in</th>
<th>warning → traffic moved (ms)</th></tr>{rows}</table>
<p>Every number on this page was read back from the tables the product wrote during the run.</p></body></html>"""
