"""Every component's public surface resolves, and every docstring example runs."""

import doctest
import importlib
import pkgutil

import pytest

import components

PACKAGES = ["components.calculations", "components.command_tracker", "components.data_valve",
            "components.agent_identity", "components.sentinel", "components.capacity",
            "components.instance_types"]
MODULES = sorted(m.name for m in pkgutil.walk_packages(components.__path__, "components."))


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_resolve(name):
    package = importlib.import_module(name)
    assert package.__all__, f"{name} has an empty __all__"
    missing = [n for n in package.__all__ if not hasattr(package, n)]
    assert not missing


@pytest.mark.parametrize("name", PACKAGES)
def test_errors_derive_from_domain_error(name):
    errors = importlib.import_module(f"{name}.errors")
    classes = [
        obj for obj in vars(errors).values() if isinstance(obj, type) and obj.__module__ == errors.__name__
    ]
    assert classes
    for cls in classes:
        assert issubclass(cls, components.errors.DomainError) and cls.__name__.endswith("Error")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
