"""``make demo``: the whole product on real spot history, in accelerated time.

    python -m localmode.demo [--start 2023-02-22T22:08Z] [--days 7] [--agents 6] [--step-minutes 120]

Local mode starts (API under ``chalice local``, an embedded AWS in its own process with the tables and
the failover state machine); six p3.2xlarge instances boot in its EC2, each running the real agent (``agent/spot_agent``)
against its own fake IMDS; the real p3.2xlarge 9-AZ availability and price trace
(``data/availability``) is replayed in accelerated time, a week by default (see ``run.py``
for one step). The
summary and ``demo-report.html`` are computed from what the tables recorded (``report.py``).
"""
