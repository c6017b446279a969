"""The Lambda package stays light: importing the app pulls in no ML or test-only libraries."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "numpy", "scipy", "joblib", "moto", "localmode")


def test_importing_app_loads_no_heavy_modules():
    code = (f"import sys, app; print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={"AWS_DEFAULT_REGION": "us-east-1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
