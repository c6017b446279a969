"""``ours_full``, the full-information ceiling: optional, labelled "not deployable" wherever it is reported,
reading every pool — while ``ours`` itself still raises on any availability it did not observe."""

from __future__ import annotations

import numpy as np

from bench.backtest import Rules, registered_policies, run_backtest, simulate, table
from bench.backtest.__main__ import main
from bench.backtest.guard import UnobservedReadError
from bench.backtest.ours import OursPolicy
from bench.backtest.ours_full import CEILING, OursFullPolicy
from bench.backtest.policies import OPTIONAL, POLICIES
from bench.backtest.report import CEILING_LABEL
from ml import traces
from tests.bench.helpers import make_trace

RULES = Rules.for_ondemand_price(3.0)


def flapping(ticks=400):
    """The cheapest pool a is down for 30 ticks out of every 60; b and c stay up."""
    avail = np.ones((ticks, 3), dtype=np.int8)
    for k in range(0, ticks, 60):
        avail[k + 30: k + 60, 0] = 0
    return make_trace(avail, [1.0, 1.4, 1.5], tick_s=300)


def test_ours_full_is_optional_and_labelled_a_ceiling_in_the_report():
    assert "ours_full" not in registered_policies() and "ours_full" in OPTIONAL
    assert POLICIES["ours_full"] is OursFullPolicy
    doc = run_backtest(flapping(), ["ours", "ours_full"], RULES, 0.5)
    assert doc["ceilings"] == {"ours_full": CEILING}
    text = table(doc)
    assert f"ours_full {CEILING_LABEL}" in text and "ours_full is a CEILING, not deployable" in text
    assert f"ours {CEILING_LABEL}" not in text  # the product is not labelled
    plain = run_backtest(flapping(), ["ours"], RULES, 0.5)
    assert "ceilings" not in plain and CEILING_LABEL not in table(plain)


def reads_every_pool(cls):
    class Probe(cls):
        def act(self, obs):
            try:
                self.seen.append(np.asarray(obs.available).tolist())
            except UnobservedReadError as exc:
                self.refused.append(exc)
            return super().act(obs)

        def reset(self, trace, rules, eval_start):
            super().reset(trace, rules, eval_start)
            self.seen, self.refused = [], []

    return Probe()


def test_ours_still_raises_on_unobserved_reads_and_ours_full_does_not():
    trace = flapping()
    ours, full = reads_every_pool(OursPolicy), reads_every_pool(OursFullPolicy)
    simulate(trace, ours, RULES, 200, 260)
    simulate(trace, full, RULES, 200, 260)
    assert ours.observability == "observed" and len(ours.refused) == 60 and not ours.seen
    assert full.observability == "full" and not full.refused and len(full.seen) == 60


def test_ours_full_learns_from_every_pool_and_never_tries_a_pool_that_is_down():
    trace = flapping()
    full = simulate(trace, OursFullPolicy(), RULES, 200, 400)
    assert full.failed_launches == 0
    policy = OursFullPolicy()
    simulate(trace, policy, RULES, 200, 260)
    pools_seen = {o.pool_id for items in policy.log.values() for o in items}
    assert pools_seen == set(trace.pools)  # evidence on pools it never used, from the week before the start too
    assert min(o.at for items in policy.log.values() for o in items) < trace.times[200].timestamp()


def test_the_cli_labels_the_ceiling(capsys):
    times = traces.p3_9az().times
    assert main(["--start", times[15000].isoformat(), "--end", times[16000].isoformat(),
                 "--policies", "ours,ours_full"]) == 0
    assert f"ours_full {CEILING_LABEL}" in capsys.readouterr().out
