"""Interchangeable instance types: catalogue, requirements, and the types an agent may run on."""

from components.instance_types.errors import InvalidTypeDeclarationError
from components.instance_types.model import (
    ARCHITECTURES,
    MAX_INSTANCE_TYPES,
    Catalogue,
    InstanceSpec,
    Requirements,
    allowed_types,
    architecture,
    declare,
    is_accelerated,
    is_burstable,
    parse_catalogue,
    resolve,
)

__all__ = [
    "ARCHITECTURES",
    "MAX_INSTANCE_TYPES",
    "Catalogue",
    "InstanceSpec",
    "InvalidTypeDeclarationError",
    "Requirements",
    "allowed_types",
    "architecture",
    "declare",
    "is_accelerated",
    "is_burstable",
    "parse_catalogue",
    "resolve",
]
