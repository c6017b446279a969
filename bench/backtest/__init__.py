"""Backtest benchmark: every placement policy replayed over the same availability/price trace.

    python -m bench.backtest --availability A.csv[.gz] --prices P.csv[.gz] --ondemand-price 3.06
    python -m bench.backtest --prices eu-west-1_spot_linux.csv.gz --instance-types m5.large \\
        --ondemand-table ondemand.csv --instance-type m5.large       # price-only: synthetic events

    python -m bench.backtest                                          # the shipped p3.2xlarge 9-AZ trace
    python -m bench.backtest --availability data/availability/aws_gpu_us-west-2_2022-10-26_probe.csv.gz \
        --start-time 2022-10-26T00:00:00Z --price-model advisor --instance-types p3.2xlarge
    python -m bench.backtest.validate [--quick]                       # parameters on data never tuned on
    make backtest BACKTEST_ARGS="--start 2023-03-01 --json build/backtest.json"

(The issue's ``bench/backtest.py`` is this package: ``__init__`` + ``__main__``.)

Input formats (see ml/traces.py, which loads them):

- ``--availability``: CSV (optionally .gz), first column ``ts`` (UTC, ``YYYY-MM-DD HH:MM:SS`` or
  ISO-8601), then one column per pool (AZ name); 1 = a spot instance could be obtained at that tick.
  Its ticks are the time grid (repeated timestamps: the last row). AZ-named pools take ``--instance-type``, or
  the type of a long price file, or the one in a release file name (``aws_r5.2xlarge_3az_...``); without
  ``--ondemand-price``/``--ondemand-table`` the type's us-east-1 list price from the shipped table (noted). A probe release's ``tick,offset_s`` file is placed from ``--start-time``
  (the us-west-2 GPU probe: ``2022-10-26T00:00:00Z``); without prices, ``--price-model advisor`` gives
  each type a constant APPROXIMATE price (on-demand × (1 − Spot Advisor saving)) and the report says so.
- ``--prices``: the same wide shape with $/h per pool per tick, or the long format
  ``timestamp,availability_zone,instance_type,spot_price`` (a price holds until the pool's next row).
  A pool with no price yet is unavailable.
- Without ``--availability`` interruptions are drawn per pool from the Spot Advisor hazard model of
  ``ml.traces.synthetic_availability`` with a fixed seed, and the report says the events are synthetic.

Rules, policies and the oracle are described in simulator.py, policies.py and oracle.py. The model
may learn only from ticks before the train split; every metric covers the ticks after it.
"""

from __future__ import annotations

import time

from bench.backtest.market import Market
from bench.backtest.model import ONDEMAND, Action, InstanceView, Observation, Policy, Rules
from bench.backtest.policies import POLICIES, register_policy, registered_policies
from bench.backtest.report import build, table
from bench.backtest.simulator import PolicyResult, simulate

__all__ = ["ONDEMAND", "Action", "InstanceView", "Observation", "Policy", "PolicyResult", "Rules",
           "POLICIES", "register_policy", "registered_policies", "run_backtest", "simulate", "table"]


def run_backtest(trace, policies=None, rules: Rules | None = None, train_fraction: float = 0.6,
                 *, start: int | None = None, end: int | None = None, extra: dict | None = None,
                 fleet: int = 1) -> dict:
    """Run policies (names from the registry, or policy objects; default: all registered) and report.

    The oracle is always run, last, so every score has its ratio to the limit. The window is
    ``[trace.split_index(train_fraction), trace.ticks)`` unless ``start``/``end`` are given. ``fleet`` > 1
    runs that many agents of each observation-limited policy (``ours``) sharing what they observe. A
    policy with a ``ceiling`` attribute (why it is not deployable) is listed under ``ceilings``.
    """
    rules = rules or Rules.for_ondemand_price(trace.ondemand_price)
    chosen = list(policies) if policies is not None else registered_policies()
    if any(isinstance(p, str) and p not in POLICIES for p in chosen):
        registered_policies()  # a name may come from bench.backtest.ours
    unknown = [p for p in chosen if isinstance(p, str) and p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; registered: {list(POLICIES)}")
    objects = [POLICIES[p]() if isinstance(p, str) else p for p in chosen]
    others = [p for p in objects if p.name != "oracle"]
    oracle = next((p for p in objects if p.name == "oracle"), None) or POLICIES["oracle"]()
    start = trace.split_index(train_fraction) if start is None else start
    end = trace.ticks if end is None else end
    market = Market(trace)
    results, seconds = {}, {}
    for policy in [*others, oracle]:
        began = time.perf_counter()
        shared = fleet if getattr(policy, "observability", "full") == "observed" else 1
        results[policy.name] = simulate(trace, policy, rules, start, end, market=market, fleet=shared,
                                        factory=type(policy) if shared > 1 else None)
        seconds[policy.name] = round(time.perf_counter() - began, 3)
    ceilings = {p.name: p.ceiling for p in others if getattr(p, "ceiling", None)}
    return build(trace, rules, start, end, market.stamps[start], market.end_time(end), train_fraction,
                 results, {"seconds": seconds, **({"ceilings": ceilings} if ceilings else {}), **(extra or {})})
