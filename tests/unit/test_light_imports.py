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
