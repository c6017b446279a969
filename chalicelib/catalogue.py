"""The EC2 instance catalogue as the handlers use it: ``data/catalogue/ec2_instance_types.csv``, read once.

The file ships in the Lambda package through ``vendor/data/catalogue`` (a link to the repository's
``data/catalogue``), so it sits at ``data/catalogue/`` beside ``chalicelib/`` both in a checkout and in
``/var/task``. The resolution itself is pure (``components.instance_types``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from components.instance_types import InstanceSpec, Requirements, declare, parse_catalogue

from chalicelib.repositories import market

CATALOGUE_PATH = Path(__file__).resolve().parents[1] / "data" / "catalogue" / "ec2_instance_types.csv"


@lru_cache(maxsize=1)
def catalogue() -> dict[str, InstanceSpec]:
    """Every catalogued type (about 900 rows, 22 KB; parsed once per container)."""
    with CATALOGUE_PATH.open(newline="") as f:
        return parse_catalogue(f)


def ondemand_price(instance_type: str | None, region: str | None = None) -> float | None:
    """AWS's on-demand list price of a type (Linux; the product's one on-demand price source: agents cannot set
    it): ``region``'s as the spot-prices job last read it from the Price List API (``market.listed_ondemand``),
    else the catalogue's us-east-1 price; None for a type neither knows."""
    if region and instance_type:
        listed = market.listed_ondemand(region, instance_type)
        if listed is not None:
            return float(listed)
    spec = catalogue().get(instance_type or "")
    return spec.ondemand_price if spec and spec.ondemand_price else None


def type_config(own_type: str, instance_types: list[str] | None,
                requirements: dict[str, Any] | None) -> dict[str, Any]:
    """The agent-config fields of a declaration: the list and requirements as given, and the resolved
    ``allowed_instance_types`` (None when nothing is declared: the agent's own type only).

    InvalidTypeDeclarationError (a 400 with its field) when the declaration cannot be used."""
    reqs = Requirements(**requirements) if requirements else None
    allowed = declare(own_type, instance_types, reqs, catalogue() if reqs else {})
    return {"instance_types": list(instance_types) if instance_types else None,
            "type_requirements": dict(requirements) if requirements else None,
            "allowed_instance_types": list(allowed) if allowed else None}
