"""The OpenAPI 3.1 document of the HTTP API, generated from the Chalice route table.

Every ``(method, path)`` in ``app.routes`` becomes an operation, declared or not:

- **Declared** (the light way): ``ApiBlueprint.route`` takes ``request=``, ``response=``,
  ``responses=``, ``query=``, ``auth=``, ``tags=``, ``csv=``, ``content=`` next to Chalice's own keywords
  and stores them as a ``RouteDoc`` (chalicelib/api/route_doc.py) on the registered view (``__openapi__``;
  a plain Chalice ``Blueprint`` uses ``@documented(...)``). ``content=`` names the success media types
  of a route that does not answer JSON (the console's page and files). A model may be a pydantic class
  or the name of one in ``chalicelib.schemas.responses`` (imported only when the document is built, so
  response models cost nothing at cold start).
- **Inferred** (whatever is not declared): the path parameters from the path; the auth kind, the
  request model and pagination from the view's own calls of ``client_request`` / ``agent_request`` /
  ``admin_request`` / ``page_params`` / ``int_param`` / ``query_params.get`` (read from its source
  with ``ast``); the success status from ``ok(..., status=N)``; the auth kind from the path prefix when
  the view calls none of the request helpers itself. A route nobody declared still appears, with a
  generic object as its success schema (``undeclared_responses`` lists those routes).

Errors share one ``Error`` schema ``{error, message, field}``. The document is built once per process
(``document``), when first asked for; this module is imported only then (never at cold start).
"""

from __future__ import annotations

import re
from typing import Any

from chalicelib.api.route_doc import AUTH_KINDS, Query, RouteDoc  # noqa: F401 - AUTH_KINDS, Query re-exported

_REQUEST_HELPERS = {"client_request": ("client", 1), "agent_request": ("agent", 2), "admin_request": ("admin", 1)}
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RESPONSES_MODULE = "chalicelib.schemas.responses"
GENERIC = {"type": "object", "description": "Response model not declared yet (see chalicelib/openapi.py)."}
ERROR_REF = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    400: "Invalid input (malformed JSON, a field out of range, a bad path parameter)",
    401: "Missing or unknown token",
    403: "Inactive client, or a credential that may not call this route",
    404: "Not found (also: another tenant's resource)",
    409: "Conflict (illegal state transition, duplicate, quota)",
    410: "Gone",
    413: "Request body too large",
    429: "Rate limited (see Retry-After)",
    503: "Service busy or a dependency unavailable (see Retry-After)",
}
_SECURITY = {
    "client": [{"clientToken": []}],
    "agent": [{"agentCredential": []}, {"clientToken": []}],
    "admin": [{"adminKey": []}],
    "none": [],
}


# --- inference from the view's source -------------------------------------------------------------

class _Inferred:
    """What a view's source says about it."""

    def __init__(self) -> None:
        self.auth: str | None = None
        self.request: Any = None
        self.paginated = False
        self.statuses: set[int] = set()
        self.query: dict[str, Query] = {}


def _callee(func) -> str | None:
    import ast

    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _const(node) -> Any:
    import ast

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        return -node.operand.value
    return None


def _infer(view) -> _Inferred:
    import ast
    import inspect
    import textwrap

    fn = inspect.unwrap(view)
    found = _Inferred()
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return found
    scope = getattr(fn, "__globals__", {})
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node.func)
        if name in _REQUEST_HELPERS:
            kind, index = _REQUEST_HELPERS[name]
            found.auth = found.auth or kind
            arg = node.args[index] if len(node.args) > index else next(
                (k.value for k in node.keywords if k.arg == "schema"), None)
            if isinstance(arg, ast.Name) and arg.id in scope:
                found.request = found.request or scope[arg.id]
        elif name == "page_params":
            found.paginated = True
        elif name == "int_param" and len(node.args) >= 2 and isinstance(_const(node.args[1]), str):
            bounds = {k.arg: _const(k.value) for k in node.keywords}
            found.query[node.args[1].value] = Query(node.args[1].value, "integer", minimum=bounds.get("low"),
                                                    maximum=bounds.get("high"))
        elif name == "get" and isinstance(node.func, ast.Attribute) and node.args \
                and isinstance(_const(node.args[0]), str) and _reads_query(node.func.value):
            found.query.setdefault(node.args[0].value, Query(node.args[0].value))
        elif name == "ok":
            status = next((k.value for k in node.keywords if k.arg == "status"),
                          node.args[1] if len(node.args) > 1 else None)
            found.statuses |= _statuses(status)
    return found


def _statuses(node) -> set[int]:
    """The statuses an ``ok(..., status=<node>)`` can answer: a constant, or each constant branch of
    ``A if cond else B``; None (no status given) is ok()'s default, 200."""
    import ast

    if node is None:
        return {200}
    if isinstance(node, ast.IfExp):
        return _statuses(node.body) | _statuses(node.orelse)
    value = _const(node)
    return {value} if isinstance(value, int) else set()


def _reads_query(node) -> bool:
    import ast

    return (isinstance(node, ast.Name) and node.id in {"params", "query", "query_params"}) or \
        "query_params" in ast.dump(node)


def _auth_from_path(path: str) -> str:
    if path.startswith("/api/admin/") or path == "/api/admin":
        return "admin"
    if path.startswith("/api/agents/{agent_id}"):
        return "agent"
    if path.startswith(("/api/client", "/api/notifications", "/api/agents")):
        return "client"
    return "none"


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "root"
    if parts[0] == "api" and len(parts) > 1:
        return {"agents": "agent", "client": "client", "admin": "admin"}.get(parts[1], parts[1])
    return parts[0].lstrip("_") or "root"


# --- the document ---------------------------------------------------------------------------------

def _model(ref: Any):
    if ref is None or not isinstance(ref, str):
        return ref
    import importlib

    return getattr(importlib.import_module(RESPONSES_MODULE), ref)


class Operation:
    """One (method, path) of the route table, declarations and inferences merged."""

    def __init__(self, **fields: Any) -> None:
        self.path: str = fields["path"]
        self.method: str = fields["method"]
        self.view_name: str = fields["view_name"]
        self.doc: RouteDoc = fields["doc"]
        self.auth: str = fields["auth"]
        self.request: Any = fields["request"]
        self.response: Any = fields["response"]
        self.statuses: list[int] = fields["statuses"]
        self.extra: dict[int, Any] = fields["extra"]
        self.query: list[Query] = fields["query"]
        self.tags: list[str] = fields["tags"]
        self.summary: str = fields["summary"]
        self.description: str = fields["description"]


def operations(app) -> list[Operation]:
    """Every route of ``app``, in path then method order."""
    ops = []
    for path in sorted(app.routes):
        for method in sorted(app.routes[path]):
            entry = app.routes[path][method]
            view = entry.view_function
            doc = getattr(view, "__openapi__", None) or RouteDoc()
            inferred = _infer(view)
            query = dict(inferred.query)
            if inferred.paginated:
                query.setdefault("limit", Query("limit", "integer", "Page size", minimum=1, maximum=_max_page()))
                query.setdefault("next_token", Query("next_token", description="From the previous page"))
            for q in doc.query:
                query[q.name] = q
            if doc.csv:
                query.setdefault("format", Query("format", enum=("json", "csv"), description="csv: text/csv export"))
            statuses = sorted(inferred.statuses) or [200]
            text = (view.__doc__ or "").strip()
            ops.append(Operation(
                path=path, method=method, view_name=entry.view_name, doc=doc,
                auth=doc.auth or inferred.auth or _auth_from_path(path),
                request=_model(doc.request or inferred.request) if method in _METHODS_WITH_BODY else None,
                response=_model(doc.response), statuses=[doc.status] if doc.status else statuses,
                extra={code: _model(m) for code, m in doc.responses.items()},
                query=list(query.values()), tags=list(doc.tags) or [_tag(path)],
                summary=doc.summary or (text.splitlines()[0] if text else entry.view_name.replace("_", " ")),
                description=text))
    return ops


def _max_page() -> int:
    from chalicelib.settings import get_settings

    return get_settings().max_page_size


def undeclared_responses(app) -> list[tuple[str, str]]:
    """``(METHOD, path)`` of every route whose success body has no declared model (generic object)."""
    return [(op.method, op.path) for op in operations(app)
            if op.response is None and not op.doc.content and min(op.statuses) < 400]


def build(app, *, title: str = "Spot Optimizer API", version: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes (a new dict on every call; see ``document``)."""
    from pydantic.json_schema import models_json_schema

    from chalicelib.api.inputs import PATH_PARAM

    ops = operations(app)
    wanted = []
    for op in ops:
        if op.request is not None:
            wanted.append((op.request, "validation"))
        for model in (op.response, *op.extra.values()):
            if model is not None:
                wanted.append((model, "serialization"))
    wanted = list(dict.fromkeys(wanted))
    refs, defs = models_json_schema(wanted, ref_template="#/components/schemas/{model}") if wanted else ({}, {})
    schemas = {name: _tidy(schema) for name, schema in defs.get("$defs", {}).items()}
    schemas["Error"] = {
        "type": "object", "title": "Error", "required": ["error", "message"],
        "properties": {"error": {"type": "string", "description": "Machine-readable code"},
                       "message": {"type": "string"},
                       "field": {"type": ["string", "null"], "description": "The offending field, when one is"}},
    }
    path_param = {"type": "string", "pattern": f"^{PATH_PARAM.pattern}$"}
    paths: dict[str, dict] = {}
    seen_ids: set[str] = set()
    for op in ops:
        operation_id = op.view_name
        if operation_id in seen_ids:
            operation_id = f"{op.method.lower()}_{op.view_name}_{len(seen_ids)}"
        seen_ids.add(operation_id)
        params = [{"name": name, "in": "path", "required": True, "schema": dict(path_param)}
                  for name in re.findall(r"{([^}]+)}", op.path)]
        params += [{"name": q.name, "in": "query", "required": q.required, "schema": q.schema(),
                    **({"description": q.description} if q.description else {})} for q in op.query]
        responses: dict[str, Any] = {}
        for status in op.statuses:
            if status >= 400:  # a route that only refuses (e.g. a retired legacy route)
                success = ERROR_REF
            else:
                success = refs[(op.response, "serialization")] if op.response is not None else dict(GENERIC)
            if op.doc.content and status < 400:  # not JSON (the console's page and files): text
                content = {media: {"schema": {"type": "string"}} for media in op.doc.content}
            else:
                content = {"application/json": {"schema": success}}
            if op.doc.csv:
                content["text/csv"] = {"schema": {"type": "string"}}
            responses[str(status)] = {"description": "Success" if status < 400 else _ERRORS.get(status, "Error"),
                                      "content": content}
        for code, model in op.extra.items():
            schema = ERROR_REF if model is None else refs[(model, "serialization")]
            responses[str(code)] = {"description": _ERRORS.get(code, "See the schema"),
                                    "content": {"application/json": {"schema": schema}}}
        for code in _error_codes(op):
            responses.setdefault(str(code), {"description": _ERRORS[code],
                                             "content": {"application/json": {"schema": ERROR_REF}}})
        item: dict[str, Any] = {"operationId": operation_id, "summary": op.summary, "tags": op.tags,
                                "security": _SECURITY[op.auth], "parameters": params, "responses": responses}
        if op.description:
            item["description"] = op.description
        if op.request is not None:
            item["requestBody"] = {"required": _has_required(op.request),
                                   "content": {"application/json": {"schema": refs[(op.request, "validation")]}}}
        paths.setdefault(op.path, {})[op.method.lower()] = item
    if version is None:
        from chalicelib.api.health import VERSION as version
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "Generated from the Chalice route table and the pydantic schemas "
                                "(chalicelib/openapi.py). Errors: {error, message, field}."},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "clientToken": {"type": "http", "scheme": "bearer",
                                "description": "A client token (legacy agents may send it as body client_token)"},
                "agentCredential": {"type": "http", "scheme": "bearer",
                                    "description": "An agent's own credential (from a verified registration)"},
                "adminKey": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"},
            },
        },
    }


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _tidy(node: Any) -> Any:
    """pydantic's JSON Schema, as JSON Schema 2020-12 says it: an optional field that may not be null
    (``x: bool = Field(default=None)``: absent means unchanged) has no ``default: null``; bounds pydantic
    leaves as ``ge``/``le`` (on nested ``Annotated`` floats) become ``minimum``/``maximum``."""
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in _BOUNDS and isinstance(value, (int, float)) and node.get("type") in ("number", "integer"):
            out.setdefault(_BOUNDS[key], value)
        elif key == "default" and value is None and not _admits_null(node):
            continue
        else:
            out[key] = _tidy(value)
    return out


def _admits_null(schema: dict) -> bool:
    kinds = schema.get("type")
    if kinds == "null" or (isinstance(kinds, list) and "null" in kinds):
        return True
    return any(isinstance(s, dict) and _admits_null(s) for s in schema.get("anyOf", []) + schema.get("oneOf", [])) \
        or "$ref" in schema or not (kinds or "anyOf" in schema or "oneOf" in schema or "enum" in schema)


def _error_codes(op: Operation) -> list[int]:
    if op.auth == "none":
        return [400, 404, 503] if op.path.startswith("/api/") else [400]
    codes = [400, 401, 403, 404, 409, 429, 503]
    if op.method in _METHODS_WITH_BODY:
        codes.append(413)
    if op.auth == "admin":
        codes.append(410)
    return sorted(codes)


def _has_required(model) -> bool:
    return any(f.is_required() for f in model.model_fields.values())


_CACHE: dict[int, dict[str, Any]] = {}


def document(app) -> dict[str, Any]:
    """``build(app)``, once per process (cold start)."""
    key = id(app)
    if key not in _CACHE:
        _CACHE[key] = build(app)
    return _CACHE[key]
