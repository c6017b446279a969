"""cdk-nag suppressions, each with its reason, added to one stack (infra/stack.py, infra/event_intake.py).

A suppression is ``(construct path under the stack, rule, reason, applies_to findings or None for the whole
rule)``; tests/infra/test_hardening.py fails on any finding not listed and on a reason that says nothing.
"""

from __future__ import annotations

from aws_cdk import Stack

Suppression = tuple[str, str, str, tuple[str, ...] | None]


def add_suppressions(stack: Stack, suppressions: tuple[Suppression, ...]) -> None:
    from cdk_nag import NagPackSuppression, NagSuppressions

    for path, rule, reason, applies_to in suppressions:
        if stack.node.try_find_child(path.split("/")[0]) is None:
            continue  # e.g. a construct only some stages have
        suppression = NagPackSuppression(id=rule, reason=reason, applies_to=list(applies_to) if applies_to else None)
        NagSuppressions.add_resource_suppressions_by_path(stack, f"/{stack.node.path}/{path}", [suppression])
