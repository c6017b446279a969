"""Precompile the app's bytecode so the Lambda package ships it (run before ``chalice package/deploy``).

    python infra/bytecode.py [--check]
    python infra/bytecode.py --zip build/pkg/deployment.zip   # also the dependencies chalice installed
    python infra/bytecode.py --chalice-deploy dev            # the zip `chalice deploy --stage dev` will reuse

Lambda's ``/var/task`` is read-only: a module shipped without its ``.pyc`` is compiled from source at
every cold start and the result thrown away. For this app's ~150 modules that compilation is the
largest single cost of ``import app`` (docs/benchmarks.md "Cold start"). Chalice copies ``chalicelib/``
and ``vendor/`` (so ``components/``) into deployment.zip file by file, ``__pycache__`` included, so
writing the ``.pyc`` files next to the sources before packaging is enough.

The files are *checked-hash* pycs (PEP 552): Python validates them against a hash of the source, not
its mtime (a zip keeps mtimes at 2 s resolution), so a stale one is never used, anywhere. They must be
written by the Lambda runtime's Python (3.12): another version's files are simply ignored.
``--check`` only reports which modules lack a valid checked-hash pyc (exit 1 if any).

The dependencies chalice installs into the package (botocore, pydantic, pynamodb, powertools...) ship
without ``.pyc`` files too; ``--zip`` adds a checked-hash pyc for every ``.py`` of a built package that has
none (for ``chalice package`` output); ``--chalice-deploy STAGE`` does the same to the zip ``chalice deploy``
caches and reuses (``make deploy`` runs it right before ``chalice deploy``).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import py_compile
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chalicelib", "components")  # what chalice ships as source (components through vendor/)
RUNTIME = (3, 12)  # the functions' runtime (Makefile PYTHON312, .chalice/config.json)


def sources(root: Path = ROOT) -> list[Path]:
    return [p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))]


def compile_all(root: Path = ROOT) -> bool:
    """Write a checked-hash pyc next to every source of the shipped packages; True when all compiled."""
    return all(compileall.compile_dir(root / package, quiet=1, force=True,
                                      invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
               for package in PACKAGES)


def missing(root: Path = ROOT) -> list[Path]:
    """Sources whose pyc is absent, not checked-hash, or for another source."""
    out = []
    for source in sources(root):
        pyc = Path(importlib.util.cache_from_source(str(source)))
        data = pyc.read_bytes() if pyc.is_file() else b""
        flags = int.from_bytes(data[4:8], "little") if len(data) >= 16 else 0
        expected = importlib.util.source_hash(source.read_bytes())
        if data[:4] != importlib.util.MAGIC_NUMBER or flags != 0b11 or data[8:16] != expected:
            out.append(source)
    return out


def _pyc_name(source: str) -> str:
    """``pkg/mod.py`` → ``pkg/__pycache__/mod.cpython-312.pyc`` (inside a zip: no pycache prefix)."""
    folder, _, name = source.rpartition("/")
    return f"{folder + '/' if folder else ''}__pycache__/{name[:-3]}.{sys.implementation.cache_tag}.pyc"


def compile_zip(package: Path, task_root: str = "/var/task") -> int:
    """Add a checked-hash pyc for every ``.py`` in the zip without one; returns how many were added.
    Sources that do not compile on this Python (a dependency's Python 2 leftovers) are skipped."""
    with zipfile.ZipFile(package) as zipped:
        names = set(zipped.namelist())
        todo = [n for n in names if n.endswith(".py") and _pyc_name(n) not in names]
        with tempfile.TemporaryDirectory() as tmp:
            for name in todo:
                zipped.extract(name, tmp)
            added = []
            for name in todo:
                source, pyc = Path(tmp, name), Path(tmp, _pyc_name(name))
                try:
                    py_compile.compile(str(source), cfile=str(pyc), dfile=f"{task_root}/{name}", doraise=True,
                                       invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
                except py_compile.PyCompileError:
                    continue
                added.append((pyc, _pyc_name(name)))
            with zipfile.ZipFile(package, "a", compression=zipfile.ZIP_DEFLATED) as out:
                for pyc, arcname in added:
                    out.write(pyc, arcname)
    return len(added)


def chalice_deploy_zip(stage: str, project_dir: Path = ROOT) -> tuple[Path, int]:
    """Build (or reuse) the dependency zip ``chalice deploy --stage <stage>`` will reuse, and add the
    dependencies' pycs to it; returns the zip and how many pycs were added.

    ``chalice deploy`` builds its package through ``LambdaDeploymentPackager``, which caches it in
    ``.chalice/deployments/<hash of requirements.txt, app files, vendor/>-<runtime>.zip`` and, when that
    file exists, only re-injects app.py/chalicelib/ into it. Building that same file with Chalice's own
    packager (the same classes and arguments its deploy build stage uses) and adding the pycs here is
    therefore what makes ``chalice deploy`` ship them. Run it after ``compile_all`` (the hash covers
    chalicelib's pycs) and right before ``chalice deploy``.
    """
    from chalice.cli.factory import CLIFactory
    from chalice.deploy.packager import DependencyBuilder, LambdaDeploymentPackager, PipRunner, SubprocessPip
    from chalice.utils import UI, OSUtils

    config = CLIFactory(str(project_dir)).create_config_obj(chalice_stage_name=stage)
    if config.automatic_layer:
        raise SystemExit("error: automatic_layer is set: chalice deploy would build another package")
    osutils = OSUtils()
    builder = DependencyBuilder(osutils=osutils, pip_runner=PipRunner(pip=SubprocessPip(osutils=osutils),
                                                                         osutils=osutils),
                                   architecture=config.lambda_architecture)
    packager = LambdaDeploymentPackager(osutils=osutils, dependency_builder=builder, ui=UI(),
                                        architecture=config.lambda_architecture)
    package = Path(packager.create_deployment_package(str(project_dir), config.lambda_python_version))
    return package, compile_zip(package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report modules without a valid pyc")
    parser.add_argument("--zip", type=Path, help="add pycs to every .py of this built package that has none")
    parser.add_argument("--chalice-deploy", metavar="STAGE",
                        help="add pycs to the dependency zip `chalice deploy --stage STAGE` will reuse (built if absent)")
    args = parser.parse_args(argv)
    if sys.version_info[:2] != RUNTIME:
        print(f"error: the Lambda runtime is Python {'.'.join(map(str, RUNTIME))}; this is "
              f"{sys.version.split()[0]} (its .pyc files would be ignored there)", file=sys.stderr)
        return 1
    if args.zip:
        print(f"bytecode: {compile_zip(args.zip)} .pyc files added to {args.zip}")
        return 0
    if args.chalice_deploy:
        package, added = chalice_deploy_zip(args.chalice_deploy)
        print(f"bytecode: {added} .pyc files added to {package.relative_to(ROOT)} (what chalice deploy reuses)")
        return 0
    if not args.check and not compile_all():
        print("error: some modules did not compile", file=sys.stderr)
        return 1
    stale = missing()
    for source in stale:
        print(f"no valid checked-hash pyc: {source.relative_to(ROOT)}", file=sys.stderr)
    if not stale:
        print(f"bytecode: {len(sources())} modules of {', '.join(PACKAGES)} have checked-hash .pyc files")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
