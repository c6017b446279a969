"""Command line of the backtest benchmark: ``python -m bench.backtest --help``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.backtest import Rules, registered_policies, run_backtest, table
from components.errors import DomainError
from ml import traces


def _list(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.backtest",
        description="Replay placement policies over an availability/price trace and score them "
                    "(cost + downtime penalty) against the perfect-foresight oracle. Formats: see "
                    "the bench.backtest module docstring. With neither --availability nor --prices: "
                    "the shipped p3.2xlarge 9-AZ trace.")
    ap.add_argument("--availability", type=Path, help="wide CSV: ts (or tick,offset_s) + one 0/1 column per pool")
    ap.add_argument("--start-time", help="UTC time of offset 0 of a tick,offset_s availability file "
                    "(the us-west-2 GPU probe release: 2022-10-26T00:00:00Z, data/SOURCES.md)")
    ap.add_argument("--price-model", choices=["advisor", "flat"],
                    help="prices for an availability file that has none (APPROXIMATE, said in the report): "
                         "advisor = constant on-demand × (1 − Spot Advisor savings %%) per type; flat = "
                         "--spot-ratio × on-demand for every pool (traces outside the Spot Advisor, e.g. GCP)")
    ap.add_argument("--spot-ratio", type=float, default=traces.FLAT_SPOT_RATIO,
                    help=f"spot / on-demand of the flat price model ({traces.FLAT_SPOT_RATIO:g})")
    ap.add_argument("--prices", type=Path, help="wide CSV ($/h per pool) or long "
                    "timestamp,availability_zone,instance_type,spot_price")
    ap.add_argument("--ondemand-price", type=float, help="on-demand $/h")
    ap.add_argument("--ondemand-table", type=Path, help="CSV instance_type,od_price_usd_per_hr (default: the "
                    "shipped us-east-1 list prices, said in the report)")
    ap.add_argument("--instance-type", help="instance type of AZ-named pools, looked up in --ondemand-table and "
                    "long prices (default: the one type of a long price file, else the type a release file name "
                    "carries, e.g. aws_r5.2xlarge_3az_..., said in the report)")
    ap.add_argument("--instance-types", help="comma list: pools of these types (long price file, or an "
                    "availability file whose columns name their type)")
    ap.add_argument("--pools", help="comma list: only these pools")
    ap.add_argument("--start", help="first time kept (UTC, ISO-8601)")
    ap.add_argument("--end", help="first time dropped (UTC, ISO-8601)")
    ap.add_argument("--train-fraction", type=float, default=0.6,
                    help="the model learns only before this split; metrics cover after it (0.6)")
    ap.add_argument("--downtime-penalty", type=float, help="USD per hour of downtime (24 × on-demand)")
    ap.add_argument("--boot-s", type=float, default=300.0, help="launch to serving (300)")
    ap.add_argument("--promote-s", type=float, default=15.0, help="ready standby takeover (15)")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--seed", type=int, default=7, help="seed of synthetic interruptions (7)")
    ap.add_argument("--policies", help="comma list (default: every registered policy; oracle always runs)")
    ap.add_argument("--step-s", type=int, default=300, help="tick of the synthetic grid (300)")
    ap.add_argument("--fleet", type=int, default=1,
                    help="agents of `ours` side by side sharing their observations; scores are per agent (1)")
    args = ap.parse_args(argv)
    if args.availability is None and args.prices is None:  # the shipped real trace
        args.availability, args.prices = traces.P3_9AZ_AVAILABILITY, traces.P3_9AZ_PRICES
        args.instance_type = args.instance_type or "p3.2xlarge"
        if args.ondemand_price is None and args.ondemand_table is None:
            args.ondemand_table = traces.ONDEMAND_2022
    if not 0 < args.train_fraction < 1:
        ap.error("--train-fraction must be in (0, 1)")
    if args.availability is not None and args.prices is None and args.price_model is None:
        ap.error("--availability without --prices needs a price model (--price-model advisor or flat)")
    return args


def _load(args: argparse.Namespace) -> traces.Trace:
    return traces.load(args.availability, args.prices, instance_types=_list(args.instance_types),
                       ondemand_price=args.ondemand_price, ondemand_table=args.ondemand_table,
                       instance_type=args.instance_type, pools=_list(args.pools),
                       start=traces.parse_ts(args.start) if args.start else None,
                       end=traces.parse_ts(args.end) if args.end else None,
                       step_s=args.step_s, seed=args.seed, price_model=args.price_model, spot_ratio=args.spot_ratio,
                       start_time=traces.parse_ts(args.start_time) if args.start_time else None)


def main(argv=None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    try:
        trace = _load(args)
    except (ValueError, KeyError, DomainError) as exc:  # a malformed file, a missing anchor, an unknown type
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing or unreadable file, a broken gzip
        print(f"error: cannot read {exc.filename or 'an input file'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if trace.ticks < 2:
        print("error: fewer than 2 ticks after filtering", file=sys.stderr)
        return 2
    loaded = time.perf_counter() - began
    rules = Rules.for_ondemand_price(trace.ondemand_price, boot_s=args.boot_s, promote_s=args.promote_s,
                                     **({} if args.downtime_penalty is None
                                        else {"downtime_penalty_per_hour": args.downtime_penalty}))
    names = _list(args.policies) or registered_policies()
    extra = {"seed": args.seed} if trace.synthetic else {}
    if args.fleet < 1:
        print("error: --fleet must be >= 1", file=sys.stderr)
        return 2
    doc = run_backtest(trace, names, rules, args.train_fraction, extra={**extra, "fleet": args.fleet},
                       fleet=args.fleet)
    doc["seconds"]["load"] = round(loaded, 3)
    print(table(doc))
    print("seconds: " + ", ".join(f"{k} {v}" for k, v in doc["seconds"].items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
