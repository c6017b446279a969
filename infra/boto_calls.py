"""Which AWS actions each Chalice function can call, found by reading the code (no import, no AWS).

    python -m infra.boto_calls            # function → IAM actions its code path can call

From each handler of ``app.py`` (the API handler: every ``@bp.route`` of ``chalicelib/api`` and the HTTP
middleware) the analysis follows references between functions of ``app.py`` and ``chalicelib`` — module
functions, imported names, ``module.attr``, classes (all their methods) and, for calls on objects it
cannot type, every method of that name in ``chalicelib`` (over-approximation is safe: it can only ask
for more). It collects:

* boto3 calls: ``<client>.<method>(`` and ``get_paginator("<method>")`` where the client is
  ``_client(...)`` of a ``chalicelib/aws`` module (or a name bound to one), the service read from that
  ``_client``; botocore's service model turns ``describe_instances`` into ``ec2:DescribeInstances``;
* pynamodb calls (``.get``/``.query``/``.save``/``TransactWrite``...) → DynamoDB actions;
* Powertools ``parameters.get_parameter`` → ``ssm:GetParameter``.

:func:`unmodelled_clients` lists boto3 client creations the analysis would not see (outside a
``_client`` of ``chalicelib/aws``): tests require it to be empty so nothing escapes the check.
"""

from __future__ import annotations

import ast
import fnmatch
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AWS_PACKAGE = "chalicelib.aws"
# Functions of chalicelib/aws that make boto3 clients: ``_client(service, region)`` (the product's own
# credentials), ``_api(service, region, account)`` (the client's account) and ``accounts.role_client`` (the
# role session behind ``_api``). A call of the first two names its service as a literal first argument.
CLIENT_FACTORY = "_client"
CLIENT_FACTORIES = (CLIENT_FACTORY, "_api")
CLIENT_MAKERS = (*CLIENT_FACTORIES, "role_client")

# pynamodb Model / TransactWrite methods → the DynamoDB actions behind them.
PYNAMODB_ACTIONS = {
    "get": ("dynamodb:GetItem",), "refresh": ("dynamodb:GetItem",), "query": ("dynamodb:Query",),
    "count": ("dynamodb:Query",), "scan": ("dynamodb:Scan",), "save": ("dynamodb:PutItem",),
    "update": ("dynamodb:UpdateItem",), "delete": ("dynamodb:DeleteItem",),
    "batch_get": ("dynamodb:BatchGetItem",), "batch_write": ("dynamodb:BatchWriteItem",),
    "condition_check": ("dynamodb:ConditionCheckItem",), "describe_table": ("dynamodb:DescribeTable",),
}
TRANSACTION_ACTIONS = ("dynamodb:ConditionCheckItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                       "dynamodb:DeleteItem")
# Client methods that sign a request locally for someone else to send: the action that request performs
# (it runs with the signing function's permissions).
PRESIGNED = {("s3", "generate_presigned_post"): "s3:PutObject"}
# Operations IAM authorises as another action (SQS's batch calls are their single-message actions).
AUTHORISED_AS = {("sqs", "send_message_batch"): "sqs:SendMessage", ("sqs", "delete_message_batch"): "sqs:DeleteMessage",
                 ("sqs", "change_message_visibility_batch"): "sqs:ChangeMessageVisibility"}
# (imported module, attribute) → actions, for libraries that call AWS for us.
LIBRARY_CALLS = {
    ("aws_lambda_powertools.utilities.parameters", "get_parameter"): ("ssm:GetParameter",),
    ("aws_lambda_powertools.utilities.parameters", "get_parameters"): ("ssm:GetParametersByPath",),
}


@dataclass
class Module:
    name: str
    tree: ast.Module
    modules: dict[str, str] = field(default_factory=dict)  # alias → module
    symbols: dict[str, tuple[str, str]] = field(default_factory=dict)  # alias → (module, name)
    defs: dict[str, ast.AST] = field(default_factory=dict)  # "f" / "Class.method" / a global → node
    classes: dict[str, list[str]] = field(default_factory=dict)  # Class → ["Class.m", ...]
    uses_pynamodb: bool = False


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Module]:
    paths = [ROOT / "app.py", *sorted((ROOT / "chalicelib").rglob("*.py"))]
    found = {}
    for path in paths:
        module = Module(_module_name(path), ast.parse(path.read_text(), str(path)))
        found[module.name] = module
    for module in found.values():
        _index(module, found)
    return found


def _index(module: Module, known: dict[str, Module]) -> None:
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                module.modules[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0])
                module.uses_pynamodb |= alias.name.startswith("pynamodb")
        elif isinstance(node, ast.ImportFrom) and node.module:
            module.uses_pynamodb |= node.module.startswith("pynamodb")
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in known or full in {k for k, _ in LIBRARY_CALLS}:
                    module.modules[alias.asname or alias.name] = full
                else:
                    module.symbols[alias.asname or alias.name] = (node.module, alias.name)
    for node in module.tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            module.defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            # A module-level value (a dispatch table, a default adapter): what it names is reached
            # through it, so it is a node of its own.
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(target, ast.Name):
                    module.defs.setdefault(target.id, node.value)
        elif isinstance(node, ast.ClassDef):
            methods = []
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    module.defs[f"{node.name}.{item.name}"] = item
                    methods.append(f"{node.name}.{item.name}")
            module.classes[node.name] = methods


def _resolve(module_name: str, name: str, seen: frozenset = frozenset()) -> list[str]:
    """Nodes ``module:def`` that ``name`` (looked up in ``module_name``) stands for."""
    mods = modules()
    module = mods.get(module_name)
    if module is None or (module_name, name) in seen:
        return []
    seen = seen | {(module_name, name)}
    if name in module.classes:
        return [f"{module_name}:{m}" for m in module.classes[name]]
    if name in module.defs:
        return [f"{module_name}:{name}"]
    if name in module.symbols:
        return _resolve(*module.symbols[name], seen)
    return []


@cache
def _methods_named() -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for module in modules().values():
        for methods in module.classes.values():
            for method in methods:
                by_name.setdefault(method.split(".")[1], []).append(f"{module.name}:{method}")
    return by_name


def _client_service(module: Module, name: str = CLIENT_FACTORY) -> str | None:
    """The service a module's ``_client`` builds when it is fixed (s3, sns, ...); None: a parameter."""
    factory = module.defs.get(name)
    for node in ast.walk(factory) if factory else ():
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "client"
                and node.args and isinstance(node.args[0], ast.Constant)):
            return node.args[0].value
    return None


def _client_call_service(module: Module, call: ast.AST) -> str | None:
    """If ``call`` is ``_client(...)`` (ours or imported), the service it makes; else None."""
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
        return None
    targets = _resolve(module.name, call.func.id)
    if not targets or targets[0].split(":")[1] not in CLIENT_FACTORIES:
        return None
    owner = modules()[targets[0].split(":")[0]]
    fixed = _client_service(owner, targets[0].split(":")[1])
    if fixed:
        return fixed
    if call.args and isinstance(call.args[0], ast.Constant):
        return call.args[0].value
    raise ValueError(f"{module.name}: {call.func.id}() without a literal service at line {call.lineno}")


@dataclass
class Facts:
    edges: set[str] = field(default_factory=set)
    operations: set[tuple[str, str]] = field(default_factory=set)  # (boto3 service, method)
    actions: set[str] = field(default_factory=set)  # IAM actions found directly


@cache
def facts(node_id: str) -> Facts:
    module_name, qualified = node_id.split(":")
    module = modules()[module_name]
    func = module.defs[qualified]
    cls = qualified.split(".")[0] if "." in qualified else None
    out = Facts()
    clients: dict[str, str] = {}  # local name → service
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            service = _client_call_service(module, node.value)
            if service:
                clients[node.targets[0].id] = service
    for node in ast.walk(func):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            out.edges.update(_resolve(module_name, node.id))
            if node.id == "TransactWrite" and module.uses_pynamodb:
                out.actions.update(TRANSACTION_ACTIONS)
        elif isinstance(node, ast.Attribute):
            value = node.value
            if isinstance(value, ast.Name) and value.id in module.modules:
                target = module.modules[value.id]
                out.edges.update(_resolve(target, node.attr))
                out.actions.update(LIBRARY_CALLS.get((target, node.attr), ()))
            elif (isinstance(value, ast.Name) and value.id in ("self", "cls") and cls
                  and f"{cls}.{node.attr}" in module.defs):
                out.edges.add(f"{module_name}:{cls}.{node.attr}")
            else:  # an object we cannot type (or an inherited method): every method of that name
                out.edges.update(_methods_named().get(node.attr, ()))
            service = _client_call_service(module, value) or (
                clients.get(value.id) if isinstance(value, ast.Name) else None)
            if service:
                out.operations.add((service, node.attr))
            if module.uses_pynamodb and node.attr in PYNAMODB_ACTIONS:
                out.actions.update(PYNAMODB_ACTIONS[node.attr])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get_paginator":
            service = _client_call_service(module, node.func.value) or (
                clients.get(node.func.value.id) if isinstance(node.func.value, ast.Name) else None)
            if service and node.args and isinstance(node.args[0], ast.Constant):
                out.operations.add((service, node.args[0].value))
    out.operations = {(s, m) for s, m in out.operations if m not in ("get_paginator", "meta", "exceptions")}
    return out


def _decorator_name(decorator: ast.AST) -> tuple[str | None, str | None]:
    """(decorator attribute, name= keyword) of ``@app.schedule(..., name="x")``-style decorators."""
    if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute):
        name = next((k.value.value for k in decorator.keywords
                     if k.arg == "name" and isinstance(k.value, ast.Constant)), None)
        return decorator.func.attr, name
    if isinstance(decorator, ast.Attribute):
        return decorator.attr, None
    return None, None


@cache
def roots() -> dict[str, tuple[str, ...]]:
    """Chalice function name → its entry points."""
    found: dict[str, list[str]] = {"api_handler": []}
    for module in modules().values():
        for qualified, node in module.defs.items():
            for decorator in getattr(node, "decorator_list", ()):
                kind, name = _decorator_name(decorator)
                if module.name == "app" and kind in ("schedule", "on_cw_event", "on_sqs_message", "lambda_function"):
                    found.setdefault(name or qualified, []).append(f"app:{qualified}")
                elif module.name.startswith("chalicelib.api.") and kind == "route":
                    found["api_handler"].append(f"{module.name}:{qualified}")
    for node in ast.walk(modules()["app"].tree):  # app.register_middleware(<function>, ...)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "register_middleware" and node.args and isinstance(node.args[0], ast.Name)):
            found["api_handler"] += _resolve("app", node.args[0].id)
    return {name: tuple(sorted(entry)) for name, entry in found.items()}


def reachable(function: str) -> set[str]:
    seen: set[str] = set()
    todo = list(roots()[function])
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(facts(node).edges - seen)
    return seen


@cache
def _service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def iam_action(service: str, method: str) -> str:
    """``("ec2", "describe_instances")`` → ``ec2:DescribeInstances`` (botocore's model, not a guess)."""
    from botocore import xform_name

    if (service, method) in PRESIGNED:
        return PRESIGNED[(service, method)]
    if (service, method) in AUTHORISED_AS:
        return AUTHORISED_AS[(service, method)]
    model = _service_model(service)
    by_method = {xform_name(op): op for op in model.operation_names}
    if method not in by_method:
        raise KeyError(f"{service}.{method} is not a boto3 operation")
    return f"{model.signing_name}:{by_method[method]}"


def actions(function: str) -> dict[str, set[str]]:
    """IAM action → the code nodes that need it, for one Chalice function."""
    needed: dict[str, set[str]] = {}
    for node in reachable(function):
        found = facts(node)
        for service, method in found.operations:
            needed.setdefault(iam_action(service, method), set()).add(node)
        for action in found.actions:
            needed.setdefault(action, set()).add(node)
    return needed


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def allows(policy: dict, action: str) -> bool:
    """Does some Allow statement of ``policy`` name ``action`` (wildcards as IAM matches them)?

    Action level only: the resources and conditions of each statement are checked by the policy tests."""
    return any(fnmatch.fnmatchcase(action.lower(), pattern.lower())
               for statement in policy["Statement"] if statement["Effect"] == "Allow"
               for pattern in _as_list(statement["Action"]))


def missing_permissions(function: str, policy: dict) -> dict[str, set[str]]:
    """Actions ``function``'s code can call that ``policy`` does not allow → the code that calls them."""
    return {action: nodes for action, nodes in actions(function).items() if not allows(policy, action)}


def unmodelled_clients() -> list[str]:
    """boto3 client/resource creations outside a ``chalicelib/aws`` ``_client``: invisible to the analysis."""
    problems = []
    for module in modules().values():
        for qualified, func in module.defs.items():
            for node in ast.walk(func):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("client", "resource")
                        and not (module.name.startswith(AWS_PACKAGE) and qualified in CLIENT_MAKERS)):
                    problems.append(f"{module.name}:{qualified} line {node.lineno}")
        if "boto3" in module.modules and not module.name.startswith(AWS_PACKAGE):
            problems.append(f"{module.name} imports boto3")
    return problems


def reset() -> None:
    """Forget what was read (after ``ROOT`` changes: the tests analyse a project of their own)."""
    for cached in (modules, _methods_named, facts, roots):
        cached.cache_clear()


def main() -> int:
    for function in sorted(roots()):
        print(f"{function}: {', '.join(sorted(actions(function)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
