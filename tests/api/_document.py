"""The OpenAPI document as a test oracle: an answer a test got is the one /api/openapi.json documents."""

from __future__ import annotations


def assert_matches_document(app, method: str, url: str, status: int, body) -> None:
    """An answer is one the OpenAPI document (chalicelib/openapi.py) gives its route: the status is documented
    and a JSON body validates against that status's schema. For the success bodies fuzzing rarely reaches."""
    from jsonschema import Draft202012Validator

    from chalicelib import openapi

    doc = openapi.document(app)
    path = url.split("?", 1)[0]
    parts = path.split("/")
    templates = [t for t in doc["paths"] if method.lower() in doc["paths"][t] and len(t.split("/")) == len(parts)
                 and all(a == b or (a.startswith("{") and a.endswith("}") and b) for a, b in zip(t.split("/"), parts))]
    assert templates, f"{method} {path} is not an operation of the document"
    template = min(templates, key=lambda t: t.count("{"))  # a literal segment wins over a parameter
    responses = doc["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template} answered {status}, documented: {sorted(responses)}"
    content = responses[str(status)].get("content", {})
    if isinstance(body, (dict, list)) and "application/json" in content:
        schema = {**content["application/json"]["schema"], "components": doc["components"]}
        errors = sorted(Draft202012Validator(schema).iter_errors(body), key=lambda e: list(e.path))
        assert not errors, f"{method} {template} {status}: " + "; ".join(
            f"{list(e.path)}: {e.message}" for e in errors[:5])
