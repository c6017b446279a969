"""Command line of the demo (``make demo``, ``python -m localmode.demo --help``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localmode.demo import __doc__ as DOC
from localmode.demo.run import run
from ml.traces import parse_ts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DOC, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--start", type=parse_ts, default=None, help="replay start (default: the trace's 2nd week)")
    parser.add_argument("--days", type=float, default=7.0, help="length of the replayed window (default: a week)")
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--step-minutes", type=int, default=120,
                        help="replay step: agents report, schedules run, warnings are checked once per step")
    parser.add_argument("--html", type=Path, default=Path("demo-report.html"))
    parser.add_argument("--json", type=Path, default=None, help="also write the summary and the table rows")
    parser.add_argument("--charts", type=Path, default=None,
                        help="also write the report's two charts as demo-prices.svg and demo-cost.svg here "
                             "(the README's pictures: --charts docs/images)")
    parser.add_argument("--serve", action="store_true",
                        help="keep local mode serving after the report, with the web console on the demo's data")
    parser.add_argument("--port", type=int, default=None,
                        help="API (and web console) port (default: 8000 with --serve, else any free port)")
    args = parser.parse_args(argv)
    run(start=args.start, days=args.days, agents=args.agents, step_minutes=args.step_minutes,
        html_path=args.html, json_path=args.json, charts_dir=args.charts,
        serve=args.serve, port=args.port or (8000 if args.serve else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
