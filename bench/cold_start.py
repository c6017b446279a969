"""Cold start per deployed function: what a fresh container imports before its handler's work starts.

    python -m bench.cold_start [--runs 5] [--top 15] [--no-request] [--json build/cold_start.json]
    python -m bench.cold_start --package build/pkg/deployment.zip   # after `make package`

Every Chalice function of this app (the API, each scheduled job, the sentinel rules, each failover task)
loads the same ``app.py``; a handler then imports what only it needs (the ``import`` statements inside
its body in app.py, which this bench reads from app.py's AST, so a new function is measured without
editing this file). For each distinct set, ``N`` fresh interpreters run
``import app`` and then the handler's own imports, in two set-ups:

- *pyc*: the app's modules have the checked-hash ``.pyc`` files infra/bytecode.py writes before packaging
  (what a deployed function loads; the acceptance number);
- *source*: the app's modules have no ``.pyc`` and are compiled at import (a package built without
  infra/bytecode.py, or a shell with PYTHONDONTWRITEBYTECODE=1 as the earlier measurements used).

Both use a private ``PYTHONPYCACHEPREFIX`` (the repository's own ``__pycache__`` never counts) in which
the standard library and the dependencies are precompiled. The table gives medians of:

- ``import app``: wall time of ``import app`` inside the interpreter, and its CPU time (less sensitive
  to a busy machine);
- ``+ handler``: the handler's lazy imports on its first call (pyc set-up);
- ``process``: the whole ``python -c`` (interpreter start-up included, pyc set-up), an upper bound.

Then the largest import costs of the API function (median self time per module, grouped by top-level
package, and the largest single modules), from N more runs under ``-X importtime``: that instrumentation
slows every import, so it never feeds the timings above. For the API function it also times a first request (``GET /health``) through
``chalice.test.Client`` against in-process moto; moto itself (and so botocore) is imported before the
clock starts there, so that run's import time is not the acceptance number: only the request's is.

``--package`` measures a built deployment.zip instead, as Lambda loads it: unzipped, the interpreter
isolated from this environment (``-I -S -B``: no site-packages, nothing written), once as built and once
with its ``.pyc`` files removed.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from infra.bytecode import PACKAGES as OWN_PACKAGES  # what infra/bytecode.py precompiles (app.py: at import)

ROOT = Path(__file__).resolve().parent.parent
API_FUNCTION = "api_handler"  # Chalice's name for the API's function
# What a deployed function sees (no local stage, no AWS endpoint override); metrics and logs quiet.
ENV = {"PATH": os.environ.get("PATH", ""), "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
       "SPOT_STAGE": "dev", "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING",
       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "PYTHONDONTWRITEBYTECODE": "1"}
# Decorators of app.py that make a function of their own (``@app.route`` handlers are the API function).
FUNCTION_DECORATORS = {"schedule", "on_cw_event", "lambda_function", "on_sqs_message", "on_sns_message",
                       "on_s3_event", "on_dynamodb_record", "on_kinesis_record", "on_ws_message"}


@dataclass
class Function:
    """One deployed function group: the functions sharing a handler import set."""

    names: list[str]
    modules: tuple[str, ...]
    runs: list[dict] = field(default_factory=list)
    source_runs: list[dict] = field(default_factory=list)


def _module_of(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    found = []
    for alias in node.names:
        full = f"{node.module}.{alias.name}"
        found.append(full if importlib.util.find_spec(full) is not None else node.module)
    return found


def functions(app_path: Path = ROOT / "app.py") -> list[Function]:
    """The deployed functions of app.py and the modules each handler imports on its first call."""
    groups: dict[tuple[str, ...], list[str]] = {(): [API_FUNCTION]}
    for node in ast.parse(app_path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute) \
                    and deco.func.attr in FUNCTION_DECORATORS:
                name = next((k.value.value for k in deco.keywords
                             if k.arg == "name" and isinstance(k.value, ast.Constant)), node.name)
                modules = tuple(sorted({m for inner in ast.walk(node)
                                        if isinstance(inner, (ast.Import, ast.ImportFrom))
                                        for m in _module_of(inner)}))
                groups.setdefault(modules, []).append(name)
    return [Function(names, modules) for modules, names in groups.items()]


_PROBE = """\
import json, time
w0, c0 = time.perf_counter(), time.process_time()
import app
w1, c1 = time.perf_counter(), time.process_time()
import importlib
for m in {modules!r}:
    importlib.import_module(m)
w2 = time.perf_counter()
print(json.dumps({{"app_ms": (w1 - w0) * 1000, "app_cpu_ms": (c1 - c0) * 1000, "handler_ms": (w2 - w1) * 1000}}))
"""


def _importtime(stderr: str) -> dict[str, int]:
    """Self time (µs) per module from ``-X importtime``'s output."""
    selves = {}
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            own, _cumulative, name = line[len("import time:"):].split("|")
            if own.strip().isdigit():
                selves[name.strip()] = int(own)
    return selves


def prepare(tmp: Path, groups: list[Function]) -> dict[str, Path]:
    """The two pycache prefixes: everything imported precompiled, then the app's own modules either
    as checked-hash pycs (infra/bytecode.py) or removed (compiled at each import)."""
    every = sorted({m for g in groups for m in g.modules})
    prefixes = {}
    for mode in ("pyc", "source"):
        prefix = tmp / mode
        env = {**ENV, "PYTHONPYCACHEPREFIX": str(prefix)}
        env.pop("PYTHONDONTWRITEBYTECODE")
        subprocess.run([sys.executable, "-c", f"import app, importlib\nfor m in {every!r}: importlib.import_module(m)"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        # Only the app's own modules are reset: a virtualenv inside the repository (.venv) lies under the
        # same prefix folder, and wiping it made every dependency compile at each import (the numbers
        # before 2026-12-03 evening were inflated by ~400 ms so).
        own = prefix / ROOT.relative_to(ROOT.anchor)
        for package in OWN_PACKAGES:
            shutil.rmtree(own / package, ignore_errors=True)
        for pyc in own.glob("app.*.pyc"):
            pyc.unlink()
        if mode == "pyc":
            subprocess.run([sys.executable, str(ROOT / "infra" / "bytecode.py")], cwd=ROOT, env=env, check=True,
                           capture_output=True)
        prefixes[mode] = prefix
    return prefixes


def probe(modules: tuple[str, ...], prefix: Path, importtime: bool = False) -> dict:
    """One fresh interpreter: ``import app`` and the handler's imports, timed.

    With ``importtime`` the interpreter also reports each module's self time (``-X importtime``); that
    instrumentation slows every import, so those runs give the breakdown only, never the timings."""
    started = time.perf_counter()
    flags = ["-X", "importtime"] if importtime else []
    done = subprocess.run([sys.executable, *flags, "-c", _PROBE.format(modules=list(modules))],
                          cwd=ROOT, env={**ENV, "PYTHONPYCACHEPREFIX": str(prefix)}, capture_output=True, text=True)
    process_ms = (time.perf_counter() - started) * 1000
    if done.returncode:
        raise RuntimeError(f"probe failed for {modules}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_ms"] = process_ms
    result["selves"] = _importtime(done.stderr)
    return result


_REQUEST = """\
import json, os, time
from moto import mock_aws
mock = mock_aws()
mock.start()
import boto3
w0 = time.perf_counter()
import app
w1 = time.perf_counter()
from chalice.test import Client
from chalicelib.tables.base import table_name
boto3.client("dynamodb").create_table(TableName=table_name("clients"), BillingMode="PAY_PER_REQUEST",
    AttributeDefinitions=[{"AttributeName": "client_id", "AttributeType": "S"}],
    KeySchema=[{"AttributeName": "client_id", "KeyType": "HASH"}])
with Client(app.app, stage_name="dev") as client:
    w2 = time.perf_counter()
    response = client.http.get("/health")
    w3 = time.perf_counter()
    second = client.http.get("/health")
    w4 = time.perf_counter()
print(json.dumps({"import_ms": (w1 - w0) * 1000, "first_ms": (w3 - w2) * 1000, "second_ms": (w4 - w3) * 1000,
                  "status": response.status_code}))
"""


def first_request(prefix: Path) -> dict:
    """``GET /health`` right after ``import app`` in a fresh interpreter, against in-process moto."""
    env = {**ENV, "PYTHONPYCACHEPREFIX": str(prefix)}
    warm = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}  # moto's own pycs, once
    subprocess.run([sys.executable, "-c", _REQUEST], cwd=ROOT, env=warm, capture_output=True, text=True)
    done = subprocess.run([sys.executable, "-c", _REQUEST], cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"first-request probe failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_PACKAGE_PROBE = """\
import sys, time
sys.path.insert(0, ".")
w, c = time.perf_counter(), time.process_time()
import app
print((time.perf_counter() - w) * 1000, (time.process_time() - c) * 1000)
"""


def package_probe(package: Path, runs: int) -> dict:
    """``import app`` from the unzipped package (as built, and without any .pyc), median of ``runs``."""
    import zipfile

    out = {}
    with tempfile.TemporaryDirectory(prefix="cold-start-pkg-") as tmp:
        for mode in ("as built", "no .pyc"):
            root = Path(tmp, mode.replace(" ", "-").replace(".", ""))
            with zipfile.ZipFile(package) as zipped:
                zipped.extractall(root)
            if mode == "no .pyc":
                for pyc in root.rglob("*.pyc"):
                    pyc.unlink()
            pycs = sum(1 for _ in root.rglob("*.pyc"))
            samples = []
            for _ in range(runs):
                done = subprocess.run([sys.executable, "-I", "-S", "-B", "-c", _PACKAGE_PROBE], cwd=root,
                                      env={"AWS_DEFAULT_REGION": "us-east-1", "SPOT_STAGE": "dev"},
                                      capture_output=True, text=True, check=True)
                samples.append(tuple(map(float, done.stdout.split())))
            out[mode] = {"pyc_files": pycs, "import_app_ms": round(statistics.median(w for w, _ in samples), 1),
                         "import_app_cpu_ms": round(statistics.median(c for _, c in samples), 1)}
    return out


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def top_costs(runs: list[dict], top: int) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Median self time (ms) by top-level package and by module, largest first."""
    modules = sorted({m for r in runs for m in r["selves"]})
    per_module = {m: statistics.median(r["selves"].get(m, 0) for r in runs) / 1000 for m in modules}
    per_package: dict[str, float] = defaultdict(float)
    for m, ms in per_module.items():
        per_package[m.split(".")[0]] += ms
    by = lambda d: sorted(((k, round(v, 1)) for k, v in d.items()), key=lambda kv: -kv[1])[:top]  # noqa: E731
    return by(per_package), by(per_module)


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per function (median)")
    parser.add_argument("--top", type=int, default=15, help="rows of the largest import costs")
    parser.add_argument("--no-request", action="store_true", help="skip the API's first-request probe")
    parser.add_argument("--package", type=Path, help="measure this built deployment.zip instead")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.package:
        load_before = _load()
        measured = package_probe(args.package, args.runs)
        print(f"import app from {args.package} (unzipped; python -I -S -B), median of {args.runs}, "
              f"load average {load_before} → {_load()}")
        for mode, r in measured.items():
            print(f"  {mode:<9} ({r['pyc_files']} .pyc files): {r['import_app_ms']} ms wall, "
                  f"{r['import_app_cpu_ms']} ms CPU")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"package": str(args.package), "runs": args.runs, **measured}, indent=2))
        return 0

    groups = functions()
    tmp = Path(tempfile.mkdtemp(prefix="cold-start-"))
    try:
        prefixes = prepare(tmp, groups)
        load_before = _load()
        for _ in range(args.runs):  # interleaved, so a burst of load hits every function alike
            for group in groups:
                group.runs.append(probe(group.modules, prefixes["pyc"]))
                group.source_runs.append(probe(group.modules, prefixes["source"]))
        load_after = _load()
        api = next(g for g in groups if API_FUNCTION in g.names)
        breakdown = [probe(api.modules, prefixes["pyc"], importtime=True) for _ in range(args.runs)]
        request = None if args.no_request else first_request(prefixes["pyc"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"Cold start per function: median of {args.runs} fresh interpreters "
          f"({sys.executable}), {os.cpu_count()} CPUs, load average {load_before} → {load_after}")
    header = (f"{'function(s)':<44}{'import app':>11}{'(CPU)':>7}{'+ handler':>10}{'= total':>9}{'process':>9}"
              f"{'| source:':>10}{' import app':>11}{'(CPU)':>7}{'= total':>9}")
    print(header)
    print("-" * len(header))
    results = []
    for group in groups:
        app_ms, cpu_ms, handler_ms = (_median(group.runs, k) for k in ("app_ms", "app_cpu_ms", "handler_ms"))
        total = round(statistics.median(r["app_ms"] + r["handler_ms"] for r in group.runs), 1)
        process = _median(group.runs, "process_ms")
        src_ms, src_cpu = _median(group.source_runs, "app_ms"), _median(group.source_runs, "app_cpu_ms")
        src_total = round(statistics.median(r["app_ms"] + r["handler_ms"] for r in group.source_runs), 1)
        names = ", ".join(group.names)
        names = names if len(names) <= 43 else names[:40] + "..."
        print(f"{names:<44}{app_ms:>11}{cpu_ms:>7.0f}{handler_ms:>10}{total:>9}{process:>9}{'|':>10}{src_ms:>11}"
              f"{src_cpu:>7.0f}{src_total:>9}")
        results.append({"functions": group.names, "handler_imports": list(group.modules), "import_app_ms": app_ms,
                        "import_app_cpu_ms": cpu_ms, "handler_imports_ms": handler_ms, "total_ms": total,
                        "process_ms": process, "source_import_app_ms": src_ms, "source_import_app_cpu_ms": src_cpu,
                        "source_total_ms": src_total,
                        "samples_import_app_ms": [round(r["app_ms"], 1) for r in group.runs]})
    packages, modules = top_costs(breakdown, args.top)
    print(f"\nLargest import costs of `import app` (pyc set-up, median self time over {args.runs} more runs under "
          f"-X importtime, which slows them, ms): by package")
    print("  " + ", ".join(f"{name} {ms}" for name, ms in packages))
    print("by module")
    print("  " + ", ".join(f"{name} {ms}" for name, ms in modules))
    print("\nHandler imports (on the first call):")
    for group in groups:
        if group.modules:
            print(f"  {', '.join(group.names)}: {', '.join(group.modules)}")
    if request:
        print(f"\nAPI first request (GET /health via chalice.test.Client, in-process moto, botocore preloaded by "
              f"moto): {request['first_ms']:.1f} ms (status {request['status']}); the second: "
              f"{request['second_ms']:.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": args.runs, "load": [load_before, load_after], "functions": results,
                                         "top_packages": packages, "top_modules": modules,
                                         "api_first_request": request}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
