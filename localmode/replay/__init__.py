"""Replay of real spot history through the whole product — work in progress for issue #5 (not yet
``make demo``: a week takes far longer than the 5 minutes the issue allows, see the closing note).

    python -m localmode.replay [--start 2023-02-22T22:08Z] [--days 7] [--agents 6] [--step-minutes 15]

Local mode starts (API under ``chalice local``, an embedded AWS with the tables and the failover state
machine); six p3.2xlarge instances boot in its EC2, each running the real agent (``agent/spot_agent``)
against its own fake IMDS; the real p3.2xlarge 9-AZ availability and price trace
(``../shared/data/availability``) is replayed in accelerated time (see ``run.py`` for one step). The
summary and ``demo-report.html`` are computed from what the tables recorded (``report.py``).
"""
