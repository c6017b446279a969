"""spot-agent: the Spot Optimizer daemon that runs on each managed EC2 instance.

It speaks the legacy v4 agent protocol (docs/legacy-compatibility.md) with the product's fixes (docs/ARCHITECTURE.md, "Agent protocol"): one
heartbeat per cycle that also delivers commands, results reported by command id, and notices read
from IMDSv2 forwarded at once.
"""

__version__ = "5.0.0"
