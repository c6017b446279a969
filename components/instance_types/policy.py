"""Which instance types a client may have the product launch: refuse the absurd (u-24tb1.112xlarge, 8-GPU
boxes) unless the operator allowed them for that client.

Pure policy: the catalogue (vCPUs per type) is passed in. A type the catalogue does not know is judged by
its name only (accelerated families, high-memory ``u-``, ``metal`` and ≥ 24xlarge sizes are refused), since
EC2 itself rejects names that are not real types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from components.instance_types.model import InstanceSpec, is_accelerated

_FAMILY = re.compile(r"^([a-z0-9-]+)\.")
_SIZE = re.compile(r"\.(\d+)xlarge$")
HUGE_SIZE = 24  # n in <n>xlarge from which an unknown type is treated as huge


@dataclass(frozen=True)
class TypePolicy:
    """A client's instance-type policy. ``families`` (e.g. ``("m5", "c6g")``) when non-empty is an allow-list
    that also admits accelerated families named in it; ``max_vcpus`` caps every type."""

    max_vcpus: int = 64
    allow_accelerated: bool = False
    families: tuple[str, ...] = ()


def family(instance_type: str) -> str | None:
    """``m5`` of ``m5.large``, ``u-24tb1`` of ``u-24tb1.112xlarge``."""
    match = _FAMILY.match(instance_type or "")
    return match.group(1) if match else None


def refusal(instance_type: str, policy: TypePolicy, catalogue: Mapping[str, InstanceSpec]) -> str | None:
    """Why ``instance_type`` is refused under ``policy`` (None: allowed).

    >>> from components.instance_types.model import InstanceSpec
    >>> cat = {"m5.large": InstanceSpec("m5.large", 2, 8.0, 0.096), "u-24tb1.112xlarge":
    ...        InstanceSpec("u-24tb1.112xlarge", 448, 24576.0, 218.0)}
    >>> refusal("m5.large", TypePolicy(), cat) is None, refusal("u-24tb1.112xlarge", TypePolicy(), cat) is None
    (True, False)
    >>> refusal("p5.48xlarge", TypePolicy(), cat) is None
    False
    """
    fam = family(instance_type)
    if fam is None:
        return f"{instance_type!r} is not an instance type"
    if policy.families and fam not in policy.families:
        return f"instance family {fam} is not allowed for this client (allowed: {', '.join(policy.families)})"
    if is_accelerated(instance_type) and not policy.allow_accelerated and fam not in policy.families:
        return f"accelerated instance types ({instance_type}) are not allowed for this client"
    spec = catalogue.get(instance_type)
    if spec is not None:
        if spec.vcpus > policy.max_vcpus:
            return f"{instance_type} has {spec.vcpus} vCPUs, above this client's limit of {policy.max_vcpus}"
        return None
    size = _SIZE.search(instance_type)
    if fam.startswith("u-") or instance_type.endswith(".metal") or (size and int(size.group(1)) >= HUGE_SIZE):
        return f"{instance_type} is not allowed for this client (unknown or oversized type)"
    return None


def refusals(instance_types: Sequence[str], policy: TypePolicy, catalogue: Mapping[str, InstanceSpec]) -> list[str]:
    """Every refusal among ``instance_types`` (empty: all allowed)."""
    return [why for t in instance_types if (why := refusal(t, policy, catalogue))]
