"""Shared by the infra tests: what a synthesis needs without the real 190 MB ML layer."""

from __future__ import annotations

from pathlib import Path


def stand_in_layer(tmp_path_factory) -> Path:
    """A layer directory that passes ``infra.stack.layer_ready`` (``python/sklearn/__init__.py``) and
    holds nothing else: the stack's asset is then a few bytes."""
    layer_dir = tmp_path_factory.mktemp("layer")
    (layer_dir / "python" / "sklearn").mkdir(parents=True)
    (layer_dir / "python" / "sklearn" / "__init__.py").write_text("__version__ = 'stand-in'\n")
    return layer_dir


def of_type(template: dict, cfn_type: str) -> dict:
    """The resources of one CloudFormation type in a synthesized template: {logical id: resource}."""
    return {name: r for name, r in template["Resources"].items() if r["Type"] == cfn_type}
