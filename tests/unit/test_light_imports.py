"""The Lambda package stays light: importing the app pulls in no ML or test-only libraries."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "numpy", "scipy", "joblib", "moto", "localmode")


MODULES = ("app", "chalicelib.jobs.decision_cycle", "chalicelib.jobs.risk_scorer", "chalicelib.decisions",
           "chalicelib.api.agents", "chalicelib.api.decisions", "chalicelib.api.models", "chalicelib.model_store")


def test_importing_app_and_the_decision_cycle_loads_no_heavy_modules():
    """Only the risk scorer's *call* needs scikit-learn (lazily, from the layer); imports never do."""
    code = (f"import sys, importlib\nfor m in {MODULES!r}: importlib.import_module(m)\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# What the API function's cold start must not pay for (docs/benchmarks.md "Cold start"): X-Ray (the failover
# tasks' Tracer), boto3 and powertools' parameters (pynamodb needs only botocore), cryptography (verifying an
# identity document), the scheduled jobs', sentinel's and failover's own modules (imported in their handlers).
NOT_AT_COLD_START = ("aws_xray_sdk", "boto3", "s3transfer", "aws_lambda_powertools.utilities.parameters",
                     "cryptography", "chalicelib.failover", "chalicelib.jobs.health_monitor",
                     "chalicelib.jobs.decision_cycle", "chalicelib.jobs.risk_scorer", "chalicelib.jobs.cleanup",
                     "chalicelib.jobs.spot_prices", "chalicelib.jobs.data_cleaner", "chalicelib.schemas.responses",
                     "chalicelib.openapi")


def _fresh(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_app_loads_nothing_only_some_functions_need():
    loaded = _fresh(f"import sys, app\nprint(','.join(m for m in {NOT_AT_COLD_START!r} if m in sys.modules))")
    assert loaded == ""


def test_importing_app_builds_no_request_schema():
    """Schemas are ``defer_build``: a validator is built by a model's first validation, not at import."""
    code = ("import app\nfrom chalicelib.schemas.base import Schema\n"
            "def every(cls):\n    for sub in cls.__subclasses__():\n        yield sub\n        yield from every(sub)\n"
            "models = set(every(Schema))\n"
            "print(len(models), ','.join(sorted(m.__name__ for m in models if m.__pydantic_complete__)))")
    count, _, built = _fresh(code).partition(" ")
    assert int(count) > 20  # the request schemas the blueprints import are all there ...
    assert built == ""  # ... none built yet


def test_a_deferred_schema_validates_on_first_use():
    from chalicelib.schemas.base import Schema

    class Probe(Schema):
        name: str

    assert not Probe.__pydantic_complete__
    assert Probe.model_validate({"name": "  x  ", "extra": 1}).name == "x"
    assert Probe.__pydantic_complete__


def test_the_failover_tasks_and_only_they_create_the_tracer():
    code = ("import sys, app\nbefore = 'aws_xray_sdk.core' in sys.modules\n"
            "from chalicelib import failover, observability\n"
            "print(before, 'aws_xray_sdk.core' in sys.modules, failover.tracer is observability.get_tracer() "
            "is observability.tracer)")
    assert _fresh(code) == "False True True"
