"""bench/cold_start.py measures every deployed function; infra/bytecode.py's pycs are the checked-hash kind."""

import importlib.util

from bench.cold_start import API_FUNCTION, functions
from chalicelib.settings import SENTINEL_FUNCTION
from infra import bytecode


def test_the_bench_knows_every_function_of_the_app_and_what_its_handler_imports():
    from app import app

    deployed = {API_FUNCTION} | {s.name for s in app.event_sources} | {f.name for f in app.pure_lambda_functions}
    groups = functions()
    assert sorted(n for g in groups for n in g.names) == sorted(deployed)
    by_name = {n: g.modules for g in groups for n in g.names}
    assert by_name[API_FUNCTION] == ()
    assert by_name["health-monitor"] == ("chalicelib.jobs.health_monitor",)
    assert by_name["failover-plan"] == ("chalicelib.failover",)
    assert by_name[SENTINEL_FUNCTION] == ("chalicelib.sentinel",)
    assert all(by_name[n] for n in deployed - {API_FUNCTION})  # every other function imports its own work lazily
    assert all(importlib.util.find_spec(m) for g in groups for m in g.modules)


def test_bytecode_writes_checked_hash_pycs_and_notices_a_stale_one(tmp_path):
    for package in bytecode.PACKAGES:
        (tmp_path / package / "sub").mkdir(parents=True)
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "sub" / "mod.py").write_text("VALUE = 1\n")
    assert len(bytecode.missing(tmp_path)) == 2 * len(bytecode.PACKAGES)
    assert bytecode.compile_all(tmp_path)
    assert bytecode.missing(tmp_path) == []
    edited = tmp_path / bytecode.PACKAGES[0] / "sub" / "mod.py"
    edited.write_text("VALUE = 2\n")
    assert bytecode.missing(tmp_path) == [edited]


def test_bytecode_adds_the_missing_pycs_of_a_built_package_once(tmp_path):
    import sys
    import zipfile

    package = tmp_path / "deployment.zip"
    with zipfile.ZipFile(package, "w") as zipped:
        zipped.writestr("dep/__init__.py", "")
        zipped.writestr("dep/mod.py", "VALUE = 1\n")
        zipped.writestr("dep/legacy.py", "print 'python 2'\n")  # does not compile: skipped, not fatal
    assert bytecode.compile_zip(package) == 2
    assert bytecode.compile_zip(package) == 0
    tag = sys.implementation.cache_tag
    with zipfile.ZipFile(package) as zipped:
        pyc = zipped.read(f"dep/__pycache__/mod.{tag}.pyc")
        assert f"dep/__pycache__/legacy.{tag}.pyc" not in zipped.namelist()
    assert pyc[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(pyc[4:8], "little") == 0b11
    assert pyc[8:16] == importlib.util.source_hash(b"VALUE = 1\n")
