"""The docs name what exists: routes, make targets, tables, scheduled functions, links.

Mechanical checks of the concrete claims a newcomer acts on first. Each reads the markdown as it is, so a
renamed route, target, table or job fails here instead of in a reader's terminal.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The docs that describe the product as it is (docs/legacy-compatibility.md also names legacy routes the product
# answers 404 on purpose; docs/benchmarks.md is a record of past runs).
CURRENT_DOCS = ("README.md", "docs/ARCHITECTURE.md", "infra/README.md", "agent/README.md", "docs/deploy-rehearsal.md")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


def _text(name: str) -> str:
    return (ROOT / name).read_text()


def _section(text: str, heading: str) -> str:
    """The body of the markdown section ``heading`` (up to the next heading of the same or a higher level)."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, flags=re.M)
    assert match, f"no section {heading!r}"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", flags=re.M).search(text, match.end())
    return text[match.end():end.start() if end else len(text)]


def _route_pattern(path: str) -> re.Pattern:
    return re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$")


@pytest.fixture(scope="module")
def routes(chalice_app) -> list[tuple[str, re.Pattern]]:
    found = [(method, _route_pattern(path)) for path, methods in chalice_app.routes.items() for method in methods]
    # /_local/* exist in the local stage only (localmode/routes.py); the tests run the dev stage.
    for path, methods in re.findall(r'@bp\.route\("([^"]+)", methods=\[([^\]]+)\]', _text("localmode/routes.py")):
        found += [(method, _route_pattern(path)) for method in re.findall(r'"(\w+)"', methods)]
    return found


def _documented_routes(name: str) -> list[tuple[int, str, str]]:
    """(line, method, path) of every ``METHOD /path`` and every curl call of ``$API/...`` in a doc."""
    out = []
    for number, line in enumerate(_text(name).splitlines(), 1):
        for method, path in re.findall(rf"\b({'|'.join(METHODS)})\s+`?(/[\w{{}}/.<>$:-]*)", line):
            out.append((number, method, path))
        for options, path in re.findall(r"\bcurl\b([^$\n]*?)\"?\$API(/[^\s\"?]*)", line):
            method = re.search(r"-X (\w+)", options)
            out.append((number, method.group(1) if method else "GET", path))
    cleaned = []
    for number, method, path in out:
        path = re.sub(r"<[^>]*>|\$\w+", "x", path.rstrip(".,:;`)")).split("?")[0]
        cleaned.append((number, method, path.rstrip("/") or "/"))
    return cleaned


@pytest.mark.parametrize("doc", CURRENT_DOCS)
def test_every_route_the_docs_name_exists(doc, routes):
    missing = [f"{doc}:{number}: {method} {path}" for number, method, path in _documented_routes(doc)
               if not any(m == method and pattern.match(path) for m, pattern in routes)]
    assert not missing, "routes the docs name that the app does not serve:\n" + "\n".join(missing)


def test_every_make_target_the_docs_name_exists():
    makefile = _text("Makefile")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M))
    named = {}
    for doc in (*CURRENT_DOCS, "docs/benchmarks.md", "docs/legacy-compatibility.md", "web/SOURCES.md",
                "data/SOURCES.md", "Makefile"):
        for number, line in enumerate(_text(doc).splitlines(), 1):
            for target in re.findall(r"(?:`|^\s*#?\s*|=\s*)make ([a-z][\w-]*)", line):
                named.setdefault(target, f"{doc}:{number}")
    assert named, "the docs name make targets"
    missing = {target: where for target, where in named.items() if target not in targets}
    assert not missing, f"make targets the docs name that the Makefile lacks: {missing}"


def test_the_architecture_table_list_is_the_models():
    from chalicelib.settings import get_settings
    from chalicelib.tables import ALL_TABLES

    prefix = get_settings().table_prefix
    models = {model.Meta.table_name.removeprefix(prefix) for model in ALL_TABLES}
    rows = re.findall(r"^\| `([a-z-]+)` \|", _section(_text("docs/ARCHITECTURE.md"), "Tables"), flags=re.M)
    assert len(rows) == len(set(rows)), "a table is listed twice"
    assert set(rows) == models, f"listed, no model: {set(rows) - models}; a model, not listed: {models - set(rows)}"


def _schedule_phrases(expression) -> list[str]:
    """How the runtime table says a schedule: Rate(5, MINUTES) → "every 5 min", Cron(15, 0, ...) → "00:15"."""
    from chalice import Cron, Rate

    if isinstance(expression, Rate):
        unit = {Rate.MINUTES: ("minute", "min"), Rate.HOURS: ("hour", "h"), Rate.DAYS: ("day", "d")}[expression.unit]
        if expression.value == 1:
            return ["daily"] if expression.unit == Rate.DAYS else [f"every {unit[0]}"]
        return [f"every {expression.value} {unit[1]}"]
    assert isinstance(expression, Cron)
    minute = int(expression.minutes)
    return [f":{minute:02d}"] if expression.hours == "*" else [f"{int(expression.hours):02d}:{minute:02d}"]


def test_every_function_of_the_app_is_in_the_runtime_pieces(chalice_app):
    from chalice.app import ScheduledEventConfig, SQSEventConfig

    table = _section(_text("docs/ARCHITECTURE.md"), "Runtime pieces")
    rows = {row.split("|")[1]: row for row in table.splitlines() if row.startswith("| ")}
    problems = []
    for source in chalice_app.event_sources:
        row = next((text for first, text in rows.items() if re.search(rf"\b{re.escape(source.name)}\b", first)), None)
        if row is None:
            problems.append(f"{source.name}: no row")
        elif isinstance(source, ScheduledEventConfig):
            phrases = _schedule_phrases(source.schedule_expression)
            if not any(phrase in row for phrase in phrases):
                problems.append(f"{source.name}: the row does not say {phrases}")
        elif isinstance(source, SQSEventConfig):
            said = (f"batch {source.batch_size}", f"at most {source.maximum_concurrency} at once")
            if not all(phrase in row for phrase in said):
                problems.append(f"{source.name}: the row does not say {said}")
    failover = [f.name for f in chalice_app.pure_lambda_functions if f.name.startswith("failover-")]
    said = re.search(r"Tasks = (\d+) `@app.lambda_function`s `failover-\*`", table)
    if not said or int(said.group(1)) != len(failover):
        problems.append(f"the failover row should say Tasks = {len(failover)}")
    assert not problems, problems


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces → hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, seen, fenced = set(), {}, False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if match:
            slug = _slug(match.group(1))
            anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
            seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _markdown_files() -> list[Path]:
    """The repository's markdown (git's view; every .md outside build output when this is not a checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "*.md"],
                             cwd=ROOT, capture_output=True, check=True).stdout.decode()
        return sorted(ROOT / name for name in out.split("\0") if name)
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", ".git", "build", "cdk.out", "node_modules"}
        return sorted(p for p in ROOT.rglob("*.md") if not skip & set(p.parts))


def test_relative_links_between_the_docs_resolve():
    broken = []
    for doc in _markdown_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            if not resolved.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# A repository path in backticks: `chalicelib/jobs/cleanup.py`, `components/capacity`, `infra/`, or a module's
# attribute `chalicelib/replicas.launch` (the module chalicelib/replicas.py must define `launch`).
_TOP_LEVEL = r"(?:\.ci|agent|bench|chalicelib|components|data|docs|infra|layers|localmode|ml|tests|vendor|web)"
_REPO_PATH = re.compile(rf"(?<![\w./-]){_TOP_LEVEL}/[\w./-]*")


def _missing_path(token: str) -> str | None:
    """Why ``token`` names nothing in the repository (None when it names a file, a folder or a module attribute)."""
    path = token.rstrip("/.")
    if (ROOT / path).exists() or (ROOT / f"{path}.py").exists():
        return None
    module, dot, attribute = path.rpartition(".")
    if dot and "/" not in attribute and (ROOT / f"{module}.py").is_file():
        source = (ROOT / f"{module}.py").read_text()
        return None if re.search(rf"\b{re.escape(attribute)}\b", source) else f"{module}.py defines no {attribute}"
    return "no such file or folder"


# docs/legacy-compatibility.md is left out: it names the legacy repositories' files (`agent/spot_agent.py`).
@pytest.mark.parametrize("doc", ("docs/ARCHITECTURE.md", "README.md", "docs/deploy-rehearsal.md"))
def test_every_repo_path_the_docs_name_exists(doc):
    problems = []
    for number, line in enumerate(_text(doc).splitlines(), 1):
        for span in re.findall(r"`([^`]+)`", line):
            if re.search(r"[<>*{}]|\.\.\.", span):  # a pattern (`<stage>.json`, `chalicelib/aws/*`), not a path
                continue
            for token in _REPO_PATH.findall(span):
                why = _missing_path(token)
                if why:
                    problems.append(f"{doc}:{number}: `{token}`: {why}")
    assert not problems, f"paths {doc} names that the repository lacks:\n" + "\n".join(problems)


def test_the_path_check_can_fail():
    assert _missing_path("chalicelib/jobs/cleanup.py") is None
    assert _missing_path("components/capacity") is None and _missing_path("infra/") is None
    assert _missing_path("chalicelib/replicas.launch") is None
    assert _missing_path("chalicelib/jobs/no_such_job.py") == "no such file or folder"
    assert _missing_path("chalicelib/replicas.no_such_function") == "chalicelib/replicas.py defines no no_such_function"


# A constant or setting the docs quote with its value: "`COMMAND_LEASE_SECONDS` (300)", "`PREWARM_TTL_S`, 1 h",
# "`MARK_ALL_READ_BUDGET` = 500", "RATE_LIMIT_PER_WINDOW=1200", "MANUAL_OVERRIDE = 75". The name is a setting of
# chalicelib/settings.py (its environment variable; the dev stage's default) or a constant of the code (module level
# or a class attribute), and the quoted number must be its value, in the doc's unit when it gives one.
_QUOTED_VALUE = re.compile(r"`?\b([A-Z][A-Z0-9_]{3,})\b`?(?:\s*=\s*|\s*\(|`, )(\d+(?:,\d{3})*(?:\.\d+)?)(?:\s?([A-Za-z]+))?")
_UNIT_SECONDS = {"s": 1, "seconds": 1, "min": 60, "minutes": 60, "h": 3600, "hour": 3600, "hours": 3600,
                 "day": 86400, "days": 86400, "KB": 1024, "KiB": 1024, "MB": 1024 ** 2, "MiB": 1024 ** 2}
_CODE_DIRS = ("chalicelib", "components", "infra", "localmode")


def _code_constants() -> dict[str, list[tuple[str, str | None]]]:
    """NAME → [(module, class or None)] for every module-level or class-level ``NAME = ...`` in the code."""
    import ast

    found: dict[str, list[tuple[str, str | None]]] = {}
    for folder in _CODE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "cdk.out" in path.parts or "build" in path.parts:
                continue
            source = path.read_text()
            if re.search(r"^\s*(?:from|import) aws_cdk\b", source, flags=re.M):
                continue  # its constants are CDK values, and importing it starts jsii's node
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            tree = ast.parse(source)
            scopes = [(None, tree.body)] + [(n.name, n.body) for n in tree.body if isinstance(n, ast.ClassDef)]
            for owner, body in scopes:
                for node in body:
                    targets = (node.targets if isinstance(node, ast.Assign)
                               else [node.target] if isinstance(node, ast.AnnAssign) and node.value else [])
                    for target in targets:
                        if isinstance(target, ast.Name) and target.id.isupper():
                            found.setdefault(target.id, []).append((module, owner))
    return found


def _number(value) -> float | None:
    from datetime import timedelta
    from decimal import Decimal
    from enum import Enum

    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return float(value)
    return None


def _quoted_values() -> list[tuple[str, str, float, str | None]]:
    """(where, NAME, number, unit) of every value the current docs quote next to a name."""
    out = []
    for doc in (*CURRENT_DOCS, "docs/legacy-compatibility.md"):
        for number, line in enumerate(_text(doc).splitlines(), 1):
            for name, quoted, unit in _QUOTED_VALUE.findall(line):
                out.append((f"{doc}:{number}", name, float(quoted.replace(",", "")), unit or None))
    return out


def test_every_value_the_docs_quote_for_a_setting_or_constant_is_the_codes():
    import importlib

    from chalicelib.settings import get_settings

    settings, constants = get_settings(), _code_constants()
    checked, problems = 0, []
    for where, name, quoted, unit in _quoted_values():
        if hasattr(settings, name.lower()):
            candidates = [getattr(settings, name.lower())]
        else:
            candidates = []
            for module, owner in constants.get(name, ()):
                holder = importlib.import_module(module)
                candidates.append(getattr(getattr(holder, owner) if owner else holder, name))
        values = {v for v in map(_number, candidates) if v is not None}
        if not values:
            continue  # not a number of the code (a shell variable, a CDK Duration, a name of AWS's)
        checked += 1
        said = {quoted} | ({quoted * _UNIT_SECONDS[unit]} if unit in _UNIT_SECONDS else set())
        if not any(abs(v - s) < 1e-6 for v in values for s in said):
            problems.append(f"{where}: {name} quoted as {quoted:g}{' ' + unit if unit else ''}, the code has "
                            + ", ".join(f"{v:g}" for v in sorted(values)))
    assert checked >= 30, f"only {checked} quoted values found: the pattern no longer matches the docs"
    assert not problems, "values the docs quote that the code does not have:\n" + "\n".join(problems)


def test_the_quoted_value_check_reads_units():
    found = _QUOTED_VALUE.findall("`STALE_DECISION_AGE` (15 min) and `PREWARM_TTL_S`, 1 h and MANUAL_OVERRIDE = 75,")
    assert found == [("STALE_DECISION_AGE", "15", "min"), ("PREWARM_TTL_S", "1", "h"), ("MANUAL_OVERRIDE", "75", "")]


# A code name in backticks, `module.attribute` or `package.module.attribute` (`agents.in_decision_cycle`,
# `chalicelib.errors.public_cause`, `fanout.Budget`): some module of that name defines or names the attribute, or
# has a submodule of that name. Paths and file names (`app.py`), and AWS's event sources (`aws.health`) are not code.
_DOTTED_NAME = re.compile(r"(?<![\w./-])(?:[a-z_]+\.)*([a-z_][a-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)(?![\w.])")
_NOT_CODE = {"py", "json", "md", "yaml", "csv", "txt", "html", "health", "ec2"}


def _modules_by_name() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for folder in (*_CODE_DIRS, "ml", "bench", "agent/spot_agent"):
        for path in (ROOT / folder).rglob("*.py"):
            if not {"cdk.out", "build"} & set(path.parts):
                found.setdefault(path.parent.name if path.name == "__init__.py" else path.stem, []).append(path)
    return found


def _missing_dotted(modules: dict[str, list[Path]], module: str, attribute: str) -> bool:
    sources = modules.get(module)
    if not sources or attribute in _NOT_CODE:
        return False
    packages = [p.parent for p in sources if p.name == "__init__.py"]
    if any((d / f"{attribute}.py").exists() or (d / attribute).is_dir() for d in packages):
        return False
    return not any(re.search(rf"\b{re.escape(attribute)}\b", p.read_text()) for p in sources)


def test_every_module_attribute_the_docs_name_exists():
    modules, checked, problems = _modules_by_name(), 0, []
    for doc in (*CURRENT_DOCS, "docs/legacy-compatibility.md"):
        for number, line in enumerate(_text(doc).splitlines(), 1):
            for span in re.findall(r"`([^`]+)`", line):
                for module, attribute in _DOTTED_NAME.findall(span):
                    checked += module in modules
                    if _missing_dotted(modules, module, attribute):
                        problems.append(f"{doc}:{number}: `{module}.{attribute}`")
    assert checked >= 100, f"only {checked} dotted names found: the pattern no longer matches the docs"
    assert not problems, "module attributes the docs name that the code lacks:\n" + "\n".join(problems)


def test_the_dotted_name_check_can_fail():
    modules = _modules_by_name()
    assert not _missing_dotted(modules, "agents", "in_decision_cycle")
    assert not _missing_dotted(modules, "chalicelib", "workflows")  # a submodule
    assert _missing_dotted(modules, "agents", "no_such_function")
    assert _DOTTED_NAME.findall("`chalicelib.errors.public_cause`, `ec2.amazonaws.com`") == [("errors", "public_cause")]


def test_every_error_code_the_docs_quote_exists():
    """"409 `account_in_use`", "503 `admin_key_unavailable`": the code raises or answers that code somewhere."""
    code = "\n".join(path.read_text() for folder in _CODE_DIRS for path in (ROOT / folder).rglob("*.py")
                     if not {"cdk.out", "build"} & set(path.parts))
    quoted = [(f"{doc}:{number}", status, name)
              for doc in (*CURRENT_DOCS, "docs/legacy-compatibility.md")
              for number, line in enumerate(_text(doc).splitlines(), 1)
              for status, name in re.findall(r"\b([45]\d\d) `([a-z][a-z_]+)`", line)]
    assert len(quoted) >= 30, f"only {len(quoted)} quoted error codes found: the pattern no longer matches the docs"
    missing = [f"{where}: {status} {name}" for where, status, name in quoted
               if not re.search(rf"[\"']{name}[\"']", code)]
    assert not missing, "error codes the docs quote that the code never answers:\n" + "\n".join(missing)


def test_the_rehearsal_doc_counts_the_rehearsal_tests():
    said = re.search(r"tests/infra/test_rehearsal\.py\s+#\s*(\d+) tests", _text("docs/deploy-rehearsal.md"))
    assert said, "docs/deploy-rehearsal.md no longer says how many tests the rehearsal has"
    tests = re.findall(r"^def test_\w+", _text("tests/infra/test_rehearsal.py"), flags=re.M)
    assert int(said.group(1)) == len(tests), f"the doc says {said.group(1)} tests, the module has {len(tests)}"
