"""infra/wire_outputs.py: cdk deploy outputs → one stage of .chalice/config.json (no CDK, no AWS)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from infra import wire_outputs
from infra.naming import RISK_SCORER_FUNCTION, stack_name

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = {
    "StateMachineArn": "arn:aws:states:eu-west-1:111122223333:stateMachine:spot-optimizer-dev-failover",
    "NotificationTopicArn": "arn:aws:sns:eu-west-1:111122223333:spot-optimizer-dev-notifications",
    "ModelBucket": "spot-optimizer-dev-models",
    "TablePrefix": "spot-optimizer-dev-",
    "AdminKeyParameter": "/spot-optimizer/dev/admin-key-hash",
    "LayerArn": "arn:aws:lambda:eu-west-1:111122223333:layer:spot-optimizer-sklearn-dev:7",
}


@pytest.fixture
def files(tmp_path):
    config = tmp_path / "config.json"
    shutil.copy(ROOT / ".chalice" / "config.json", config)
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps({stack_name("dev"): OUTPUTS}))
    return config, outputs


def test_wires_only_the_stage_and_keeps_everything_else(files):
    config, outputs = files
    before = json.loads(config.read_text())
    assert wire_outputs.main(["--stage", "dev", "--outputs", str(outputs), "--config", str(config)]) == 0
    after = json.loads(config.read_text())
    env = after["stages"]["dev"]["environment_variables"]
    assert env["FAILOVER_STATE_MACHINE_ARN"] == OUTPUTS["StateMachineArn"]
    assert env["NOTIFICATION_TOPIC_ARN"] == OUTPUTS["NotificationTopicArn"]
    assert env["MODEL_BUCKET"] == OUTPUTS["ModelBucket"]
    assert after["stages"]["dev"]["lambda_functions"][RISK_SCORER_FUNCTION]["layers"] == [OUTPUTS["LayerArn"]]
    # nothing else moved: the other stages, the top level, the other keys of dev
    assert after["stages"]["prod"] == before["stages"]["prod"]
    assert {k: v for k, v in after.items() if k != "stages"} == {k: v for k, v in before.items() if k != "stages"}
    for key in before["stages"]["dev"]["environment_variables"]:
        if key not in wire_outputs.ENVIRONMENT_OUTPUTS:
            assert env[key] == before["stages"]["dev"]["environment_variables"][key]
    assert config.read_text().endswith("}\n")
    # idempotent
    assert wire_outputs.main(["--stage", "dev", "--outputs", str(outputs), "--config", str(config)]) == 0
    assert json.loads(config.read_text()) == after


@pytest.mark.parametrize("problem", ["no-layer", "other-stack", "unknown-stage"])
def test_refuses_and_leaves_the_config_untouched(files, problem, capsys):
    config, outputs = files
    original = config.read_text()
    stage = "dev"
    if problem == "no-layer":
        outputs.write_text(json.dumps({stack_name("dev"): {k: v for k, v in OUTPUTS.items() if k != "LayerArn"}}))
    elif problem == "other-stack":
        outputs.write_text(json.dumps({stack_name("prod"): OUTPUTS}))
    else:
        stage = "qa"
        outputs.write_text(json.dumps({stack_name("qa"): OUTPUTS}))
    assert wire_outputs.main(["--stage", stage, "--outputs", str(outputs), "--config", str(config)]) == 1
    assert config.read_text() == original
    assert "wire_outputs:" in capsys.readouterr().err


def test_check_mode(files):
    config, _ = files
    assert wire_outputs.main(["--stage", "prod", "--check", "--config", str(config)]) == 0
    assert wire_outputs.main(["--stage", "qa", "--check", "--config", str(config)]) == 1
