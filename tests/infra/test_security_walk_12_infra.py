"""Security walk 12, infra side: who in the product account can act in every client's account. Each test is one
attack; its docstring says what happened before the fix (when it found something) and what holds now.

The infra stack and one forwarder stack are synthesised once for the module (dev, without the ML layer).
"""

from __future__ import annotations

import pytest

from infra.naming import stack_name
from infra.policies import client_role_name
from tests.infra._support import of_type

pytestmark = pytest.mark.slow

STAGE = "dev"


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, dict]:
    """{stack name: template} of the dev stage's infra stack and a forwarder stack (deploy region us-east-1)."""
    import aws_cdk as cdk
    from aws_cdk.assertions import Template

    from infra.main import add_event_forwarders
    from infra.stack import SpotOptimizerStack

    app = cdk.App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stacks = [SpotOptimizerStack(app, stack_name(STAGE), stage=STAGE, skip_layer=True),
              *add_event_forwarders(app, STAGE, "eu-west-1", "us-east-1", alarm_email=None)]
    return {stack.stack_name: Template.from_stack(stack).to_json() for stack in stacks}


def _statements(template: dict):
    """(resource, statement) of every identity policy in the template: inline role policies and AWS::IAM::Policy."""
    for name, role in of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                yield name, statement
    for name, policy in of_type(template, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            yield name, statement


def _actions(statement: dict) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)


def test_no_role_of_the_product_stacks_may_assume_a_clients_access_role(templates):
    """The attack: a client's access role (infra/client-account-role.yaml) trusts, with the client's ExternalId, any
    product-account role whose ARN matches ``role/spot-optimizer-<stage>-*`` — meant for the Chalice function roles
    and the operator's redrive role. CloudFormation names the roles of the CDK stacks after the stack
    (``spot-optimizer-<stage>-infra-…``, ``spot-optimizer-<stage>-events-<region>-…``): they match that pattern too.
    One of them granted ``sts:AssumeRole`` (or ``sts:*``, ``*``) would reach every client's account with the product's
    EC2 permissions there, from a role no walk of the function policies looks at (the failover state machine's, the
    event forwarders', CDK's custom-resource providers'). Holds: the stacks' roles have names under that pattern,
    and none of their policies allows any STS action or a wildcard action; no managed policy beyond Lambda's basic
    execution role is attached."""
    assert all(name.startswith(f"spot-optimizer-{STAGE}-") for name in templates)  # so their roles' names match
    assert f"role/{client_role_name(STAGE)}" not in str(templates)  # no stack names the client role at all
    found = [(stack, resource, action) for stack, template in templates.items()
             for resource, statement in _statements(template) if statement.get("Effect") == "Allow"
             for action in _actions(statement)
             if action == "*" or action.lower().startswith("sts:") or action.lower() == "iam:*"]
    assert found == []
    managed = {str(arn) for template in templates.values() for role in of_type(template, "AWS::IAM::Role").values()
               for arn in role["Properties"].get("ManagedPolicyArns", [])}
    assert all("AWSLambdaBasicExecutionRole" in arn for arn in managed), managed
