"""spot-agent: the Spot Optimizer daemon that runs on each managed EC2 instance.

It speaks the legacy v4 agent protocol (LEGACY.md §2) with the product's fixes (PRODUCT.md §4): one
heartbeat per cycle that also delivers commands, results reported by command id, and notices read
from IMDSv2 forwarded at once.
"""

__version__ = "5.0.0"
