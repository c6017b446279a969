"""CPU of two paths whose cost once grew out of hand: measured here, never asserted in a test.

    python -m bench.hot_paths [--runs 5]

- *report drop walk*: validating a 15 KB cleanup report of 5,000 malformed elements (every list at its length
  bound, every element an integer), each dropped and named in a warning (``chalicelib.schemas.base``). The walk
  that finds which dropped value lies inside another compared every target with every other: ~3 s of CPU for
  this report. It now looks up each target's prefixes.
- *oracle DP*: ``bench.backtest.oracle.solve`` over a 20,000-tick, 9-pool random trace (the 9-AZ trace's size),
  which every backtest table's ``oracle`` column runs.

Each is timed ``--runs`` times (``time.process_time``, CPU of this process); the median and the largest are printed.
Results: docs/benchmarks.md, "Hot paths".
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable


def malformed_cleanup() -> dict:
    """5,000 malformed elements (15 KB): every list at its length bound, every element an integer."""
    return {"snapshots": {"deleted": [1] * 1000, "failed": [1] * 1000},
            "amis": {"deleted_amis": [1] * 1000, "deleted_snapshots": [1] * 1000, "failed": [1] * 1000}}


def _drop_walk() -> Callable[[], object]:
    from chalicelib.schemas.agents import CleanupReportRequest

    body = malformed_cleanup()
    return lambda: CleanupReportRequest.model_validate(body)


def _oracle_dp() -> Callable[[], object]:
    from datetime import UTC, datetime, timedelta

    import numpy as np

    from bench.backtest import Rules
    from bench.backtest.market import Market
    from bench.backtest.oracle import solve
    from ml.traces import Trace

    rng = np.random.default_rng(1)
    ticks, pools = 20_000, 9
    avail = (rng.random((ticks, pools)) < 0.97).astype(np.int8)
    prices = np.abs(rng.normal(1.0, 0.2, (ticks, pools)))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    times = [start + timedelta(seconds=195 * i) for i in range(ticks)]
    trace = Trace("random 20k x 9", times, [f"pool-{i}" for i in range(pools)], avail, prices, 3.0)
    market, rules = Market(trace), Rules.for_ondemand_price(3.0)
    return lambda: solve(market, rules, 0, ticks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)
    for name, build in (("report drop walk (5,000 malformed elements)", _drop_walk),
                        ("oracle DP (20,000 ticks x 9 pools)", _oracle_dp)):
        run, spent = build(), []
        for _ in range(args.runs):
            started = time.process_time()
            run()
            spent.append(time.process_time() - started)
        print(f"{name}: median {statistics.median(spent) * 1000:.0f} ms CPU, max {max(spent) * 1000:.0f} ms "
              f"({args.runs} runs)")


if __name__ == "__main__":
    main()
