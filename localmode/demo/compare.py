"""What the backtest's policies would have paid on the demo's own window and pools, next to what the
product measured end to end.

How the comparison is made (README "make demo", docs/benchmarks.md "The demo's run time"):

- one backtest run per demo agent: ``bench.backtest.simulate`` on the trace restricted to the pools of
  the agent's region (the product only ever places an agent in its own region:
  ``chalicelib.decisions.market`` and the failover planner read the pools of the agent's region);
- the window is the demo's: the trace is sliced from ``HISTORY`` before the demo's start to its end and
  the backtest evaluates from the first trace tick at or after the start (``simulate``'s ``start``), so
  the evaluated part is the demo window (to one 195-s tick) and the day before is history only (the
  24 h of prices ``ours`` reads; nothing is trained: ``ours`` scores risk from what it observed);
- every policy but the oracle starts in the pool the demo agent booted in (``ondemand`` on demand);
  the oracle picks its own start: it is the limit with perfect foresight;
- ``Rules.boot_s`` is the demo's boot time: the embedded EC2 runs an instance the moment it is launched
  (0 s of replay time, which is also what the product measures from its switch reports);
- ``ours`` scores risk from its observations (the evidence estimate); the product in the demo uses the
  committed model it uploads. Scoring the backtest with that model instead is too slow for the demo
  (about two minutes); docs/benchmarks.md gives the default week's number once;
- costs are summed over agents and also given per agent-hour (every demo agent runs the whole window).
  "auto-switch" is the auto-switch agents only; "all" is every agent, where the product's
  manual-replica agents also pay their hot standbys (the backtest's runs keep none).

The product's check (acceptance of issue #11): the auto-switch agents' measured cost must be within
``TOLERANCE`` × backtest ``ours`` on the same agents.
"""

from __future__ import annotations

from datetime import datetime, timedelta

POLICIES = ("ondemand", "static", "cheapest", "price_capacity", "ours", "oracle")
HISTORY = timedelta(days=1)
TOLERANCE = 1.25
DEMO_BOOT_S = 0.0


def agent_runs(trace, start: datetime, end: datetime, agents: list[dict], boot_s: float = DEMO_BOOT_S) -> dict:
    """Each policy's cost for each agent (``{"logical", "mode", "az"}``, ``az`` where it booted).

    Returns ``{"eval_start", "eval_end", "boot_s", "agents": {logical: {policy: cost}}, "pools": {logical: [...]}}``.
    """
    from bench.backtest import ONDEMAND, POLICIES as REGISTRY, Rules, registered_policies, simulate
    from bench.backtest.market import Market

    registered_policies()  # loads ``ours``
    rules = Rules.for_ondemand_price(trace.ondemand_price, boot_s=boot_s)
    out: dict = {"boot_s": boot_s, "agents": {}, "pools": {}}
    by_region: dict[str, tuple] = {}
    for agent in agents:
        region = trace.regions.get(agent["az"]) or agent["az"][:-1]
        if region not in by_region:
            pools = [p for p in trace.pools if trace.regions.get(p) == region]
            sub = trace.subset(pools, max(trace.times[0], start - HISTORY), end)
            first = next(i for i, t in enumerate(sub.times) if t >= start)
            by_region[region] = (sub, first, Market(sub))
        sub, first, market = by_region[region]
        out["eval_start"] = sub.times[first].isoformat()
        out["eval_end"] = datetime.fromtimestamp(market.end_time(sub.ticks), start.tzinfo).isoformat()
        out["pools"][agent["logical"]] = list(sub.pools)
        spot_start = agent["az"] if agent["az"] in sub.pools and market.available[first, sub.pools.index(agent["az"])] \
            else None  # the demo booted it where the trace had capacity; the first tick may differ
        starts = {"oracle": None, "ondemand": ONDEMAND}
        out["agents"][agent["logical"]] = {
            name: simulate(sub, REGISTRY[name](), rules, first, sub.ticks, starts.get(name, spot_start),
                           market=market).cost_usd for name in POLICIES}
    return out


def table(runs: dict, measured: dict[str, float], modes: dict[str, str], hours: float) -> dict:
    """Rows ``{name, auto_usd, auto_per_agent_h, all_usd, all_per_agent_h}``: each policy, then the
    product as measured; plus the check of the product against ``ours`` on the auto-switch agents."""
    auto = [a for a, m in modes.items() if m == "auto-switch"]
    everyone = list(modes)

    def row(name: str, cost_of) -> dict:
        auto_usd, all_usd = sum(cost_of(a) for a in auto), sum(cost_of(a) for a in everyone)
        return {"name": name, "auto_usd": round(auto_usd, 2), "all_usd": round(all_usd, 2),
                "auto_per_agent_h": round(auto_usd / (len(auto) * hours), 4) if auto and hours else None,
                "all_per_agent_h": round(all_usd / (len(everyone) * hours), 4) if everyone and hours else None}

    rows = [row(p, lambda a, p=p: runs["agents"][a][p]) for p in POLICIES]
    product = row("product (measured)", lambda a: measured.get(a, 0.0))
    ours = next(r for r in rows if r["name"] == "ours")
    ratio = product["auto_usd"] / ours["auto_usd"] if ours["auto_usd"] else None
    return {"eval_start": runs["eval_start"], "eval_end": runs["eval_end"], "boot_s": runs["boot_s"],
            "agents_auto": len(auto), "agents_all": len(everyone), "hours": round(hours, 2),
            "rows": [*rows, product], "ratio_to_ours": None if ratio is None else round(ratio, 3),
            "tolerance": TOLERANCE, "passed": ratio is not None and ratio <= TOLERANCE}
