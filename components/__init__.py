"""Pure domain core of Spot Optimizer.

Everything under ``components/`` is plain Python: dataclasses, enums, Protocol
ports and deciding functions. No AWS SDK, no web framework, no ORM. Time, ids
and randomness are passed in, so every rule is deterministic under test and
the same code runs in Lambda, in local mode and in the benchmarks.
"""
