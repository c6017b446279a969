"""A route's OpenAPI declarations (``ApiBlueprint.route(..., response=..., query=[Query(...)], auth=...)``).

Small on purpose: every blueprint imports it at cold start; the document itself is built by
chalicelib/openapi.py, imported only when ``GET /api/openapi.json`` is first asked for.
"""

from __future__ import annotations

from typing import Any

AUTH_KINDS = ("client", "agent", "admin", "none")


class Query:
    """One query parameter."""

    __slots__ = ("name", "type", "description", "enum", "minimum", "maximum", "required", "pattern")

    def __init__(self, name: str, type: str = "string", description: str = "", enum: tuple[str, ...] = (),
                 minimum: int | None = None, maximum: int | None = None, required: bool = False,
                 pattern: str | None = None) -> None:
        self.name, self.type, self.description, self.enum = name, type, description, tuple(enum)
        self.minimum, self.maximum, self.required, self.pattern = minimum, maximum, required, pattern

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.enum:
            out["enum"] = list(self.enum)
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out


class RouteDoc:
    """What a route declares about itself; None / empty means "infer it".

    ``request``/``response``: a pydantic model class, or a name in chalicelib.schemas.responses;
    ``status``: the success status (else inferred from ``ok(..., status=N)``, else 200); ``responses``:
    extra statuses → model (class, name, or None for the Error schema); ``auth``: client | agent | admin |
    none; ``csv``: also answers text/csv (``?format=csv``); ``content``: the success media types of a route
    that does not answer JSON (``("text/html",)``: its body is text, no model). Plain class, not a dataclass: it is built at
    import time of every blueprint (cold start)."""

    __slots__ = ("request", "response", "status", "responses", "query", "auth", "tags", "csv", "summary", "content")

    def __init__(self, request: Any = None, response: Any = None, status: int | None = None,
                 responses: dict[int, Any] | None = None, query: tuple[Query, ...] = (), auth: str | None = None,
                 tags: tuple[str, ...] = (), csv: bool = False, summary: str | None = None,
                 content: tuple[str, ...] = ()) -> None:
        if auth is not None and auth not in AUTH_KINDS:
            raise ValueError(f"auth must be one of {AUTH_KINDS}, not {auth!r}")
        self.request, self.response, self.status, self.responses = request, response, status, dict(responses or {})
        self.query, self.auth, self.tags, self.csv, self.summary = tuple(query), auth, tuple(tags), csv, summary
        self.content = tuple(content)


DOC_KEYWORDS = frozenset({"request", "response", "status", "responses", "query", "auth", "tags", "csv", "summary",
                          "content"})


def route_doc(kwargs: dict[str, Any]) -> RouteDoc | None:
    """Pop the OpenAPI keywords out of a route's keyword arguments (Chalice refuses unknown ones)."""
    found = {k: kwargs.pop(k) for k in list(kwargs) if k in DOC_KEYWORDS}
    return RouteDoc(**found) if found else None


def documented(**declared: Any):
    """The declarations of a route of a plain Chalice ``Blueprint`` (one that is not an ``ApiBlueprint``,
    such as the console's): ``@bp.route(...)`` above ``@documented(content=("text/html",))``."""
    doc = RouteDoc(**declared)

    def decorator(view):
        view.__openapi__ = doc
        return view

    return decorator
