"""Interchangeable instance types: the catalogue, requirements, and what an agent may run on.

An agent runs on its own instance type unless it declares others it can run on: a list, and/or
requirements (vCPU, memory, architecture, burstable, accelerated) resolved against the catalogue. The
declared types are interchangeable for the service, so their pools compete on price per
instance-hour and risk; pools span these types × the region's zones.

The architecture, burstable and accelerated classes come from AWS's type naming (``m6g`` = Graviton,
``t3`` = burstable, ``p``/``g``/``inf``/``trn``/``dl``/``f``/``vt`` = accelerated): one AMI boots one
architecture, so a resolution never leaves the agent's own one unless asked.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from components.instance_types.errors import InvalidTypeDeclarationError
from components.pool_id import is_valid_instance_type

MAX_INSTANCE_TYPES = 20  # types an agent may run on, its own included (20 types × ~3 zones = 60 pools)
ARCHITECTURES = ("x86_64", "arm64")

_FAMILY = re.compile(r"^([a-z]+)(\d*)([a-z-]*)\.")
_ACCELERATED = re.compile(r"^(p|g|gr|inf|trn|dl|f|vt)\d")
_ARM = re.compile(r"^(a1|[a-z]+\d+g[a-z]*)\.")  # a1, m6g, c7gn, t4g, r8gd …


def architecture(instance_type: str) -> str:
    """``arm64`` for Graviton types (``a1``, generation digit followed by ``g``), else ``x86_64``.

    >>> architecture("m6g.large"), architecture("m6i.large"), architecture("g4dn.xlarge")
    ('arm64', 'x86_64', 'x86_64')
    """
    return "arm64" if _ARM.match(instance_type) else "x86_64"


def is_burstable(instance_type: str) -> bool:
    """T-family types run on CPU credits.

    >>> is_burstable("t3.large"), is_burstable("m5.large")
    (True, False)
    """
    match = _FAMILY.match(instance_type)
    return bool(match) and match.group(1) == "t"


def is_accelerated(instance_type: str) -> bool:
    """Accelerated-computing families (GPU, Inferentia, Trainium, Gaudi, FPGA, video).

    >>> is_accelerated("g4dn.xlarge"), is_accelerated("p3.2xlarge"), is_accelerated("m6g.large")
    (True, True, False)
    """
    return bool(_ACCELERATED.match(instance_type))


@dataclass(frozen=True)
class InstanceSpec:
    """One catalogue row: vCPUs, memory and the list on-demand price ($/h, None when unknown)."""

    instance_type: str
    vcpus: int
    memory_gib: float
    ondemand_price: float | None = None


Catalogue = Mapping[str, InstanceSpec]


def parse_catalogue(lines: Iterable[str]) -> dict[str, InstanceSpec]:
    """Catalogue CSV (``instance_type,vcpus,memory_gib,ondemand_usd_per_hr_us_east_1``) → specs.

    >>> rows = ["instance_type,vcpus,memory_gib,ondemand_usd_per_hr_us_east_1", "m5.large,2,8,0.096",
    ...         "m7i.large,2,8,"]
    >>> parse_catalogue(rows)["m7i.large"]
    InstanceSpec(instance_type='m7i.large', vcpus=2, memory_gib=8.0, ondemand_price=None)
    """
    specs = {}
    for row in csv.DictReader(lines):
        price = row.get("ondemand_usd_per_hr_us_east_1") or ""
        specs[row["instance_type"]] = InstanceSpec(row["instance_type"], int(row["vcpus"]), float(row["memory_gib"]),
                                                   float(price) if price else None)
    return specs


@dataclass(frozen=True)
class Requirements:
    """What the service needs of a type; bounds are inclusive, None = unbounded.

    ``architecture`` None = the agent's own type's; ``burstable``/``accelerated`` False exclude those
    families, True requires them, None allows either.
    """

    vcpus_min: int | None = None
    vcpus_max: int | None = None
    memory_gib_min: float | None = None
    memory_gib_max: float | None = None
    architecture: str | None = None
    burstable: bool | None = False
    accelerated: bool | None = False

    def __post_init__(self) -> None:
        for low, high, name in ((self.vcpus_min, self.vcpus_max, "vcpus"),
                                (self.memory_gib_min, self.memory_gib_max, "memory_gib")):
            for value in (low, high):
                if value is not None and not (math.isfinite(value) and value > 0):
                    raise InvalidTypeDeclarationError(f"{name} bounds must be positive", field=f"requirements.{name}")
            if low is not None and high is not None and low > high:
                raise InvalidTypeDeclarationError(f"{name}_min is above {name}_max", field=f"requirements.{name}_min")
        if self.vcpus_min is None and self.memory_gib_min is None:
            raise InvalidTypeDeclarationError("requirements need vcpus_min or memory_gib_min",
                                              field="requirements")
        if self.architecture is not None and self.architecture not in ARCHITECTURES:
            raise InvalidTypeDeclarationError(f"architecture must be one of {', '.join(ARCHITECTURES)}",
                                              field="requirements.architecture")

    def matches(self, spec: InstanceSpec, arch: str) -> bool:
        """Does ``spec`` meet every bound and class (``arch`` = the architecture required)?"""
        t = spec.instance_type
        return (_within(spec.vcpus, self.vcpus_min, self.vcpus_max)
                and _within(spec.memory_gib, self.memory_gib_min, self.memory_gib_max)
                and architecture(t) == arch
                and (self.burstable is None or is_burstable(t) == self.burstable)
                and (self.accelerated is None or is_accelerated(t) == self.accelerated))


def _within(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def resolve(requirements: Requirements, catalogue: Catalogue, *, own_type: str,
            limit: int = MAX_INSTANCE_TYPES) -> tuple[str, ...]:
    """The catalogue types meeting ``requirements``, cheapest list on-demand price first (unknown prices
    last, then fewer vCPUs/memory, then name), at most ``limit``.

    >>> cat = parse_catalogue(["instance_type,vcpus,memory_gib,ondemand_usd_per_hr_us_east_1",
    ...     "m5.large,2,8,0.096", "m5a.large,2,8,0.086", "m6g.large,2,8,0.077", "t3.large,2,8,0.0832",
    ...     "c5.large,2,4,0.085", "m5.xlarge,4,16,0.192"])
    >>> resolve(Requirements(vcpus_min=2, vcpus_max=2, memory_gib_min=8), cat, own_type="m5.large")
    ('m5a.large', 'm5.large')
    """
    arch = requirements.architecture or architecture(own_type)
    found = [s for s in catalogue.values() if requirements.matches(s, arch)]
    found.sort(key=lambda s: (s.ondemand_price is None, s.ondemand_price or 0.0, s.vcpus, s.memory_gib,
                              s.instance_type))
    return tuple(s.instance_type for s in found[:max(0, limit)])


def declare(own_type: str, instance_types: Sequence[str] | None, requirements: Requirements | None,
            catalogue: Catalogue) -> tuple[str, ...] | None:
    """The types an agent may run on: its own, its list, then its requirements' cheapest matches, at most
    ``MAX_INSTANCE_TYPES`` in all. None when it declared nothing (its own type only).

    Refused (InvalidTypeDeclarationError): a malformed type, a list that mixes architectures with the
    agent's own (one AMI boots one architecture), more than ``MAX_INSTANCE_TYPES`` types, or
    requirements no catalogue type meets.

    >>> cat = parse_catalogue(["instance_type,vcpus,memory_gib,ondemand_usd_per_hr_us_east_1",
    ...     "m5.large,2,8,0.096", "m5a.large,2,8,0.086", "m6i.large,2,8,0.096"])
    >>> declare("m5.large", ["m6i.large"], Requirements(vcpus_min=2, memory_gib_min=8), cat)
    ('m5.large', 'm6i.large', 'm5a.large')
    """
    if not instance_types and requirements is None:
        return None
    listed = list(dict.fromkeys([own_type, *(instance_types or ())]))
    for t in listed[1:]:
        if not is_valid_instance_type(t):
            raise InvalidTypeDeclarationError(f"invalid instance type {t!r}", field="instance_types")
        if architecture(t) != architecture(own_type):
            raise InvalidTypeDeclarationError(
                f"{t} is {architecture(t)} but the agent runs {architecture(own_type)} ({own_type}): one AMI "
                f"boots one architecture", field="instance_types")
    if len(listed) > MAX_INSTANCE_TYPES:
        raise InvalidTypeDeclarationError(f"at most {MAX_INSTANCE_TYPES} instance types, the agent's own "
                                          f"included", field="instance_types")
    if requirements is not None:
        if requirements.architecture and requirements.architecture != architecture(own_type):
            raise InvalidTypeDeclarationError(
                f"the agent runs {architecture(own_type)} ({own_type}): one AMI boots one architecture",
                field="requirements.architecture")
        matched = resolve(requirements, catalogue, own_type=own_type, limit=len(catalogue))
        if not matched:
            raise InvalidTypeDeclarationError("no instance type in the catalogue meets the requirements",
                                              field="requirements")
        listed = list(dict.fromkeys([*listed, *matched]))[:MAX_INSTANCE_TYPES]
    return tuple(listed)


def allowed_types(own_type: str | None, declared: Sequence[str] | None) -> tuple[str, ...]:
    """What the decision cycle, failover and coordinator consider: the agent's current type first (it
    may have moved to one of its declared types), then the declared ones.

    >>> allowed_types("m5a.large", ["m5.large", "m5a.large"])
    ('m5a.large', 'm5.large')
    >>> allowed_types("m5.large", None)
    ('m5.large',)
    """
    return tuple(dict.fromkeys(t for t in (own_type, *(declared or ())) if t))
