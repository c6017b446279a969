"""Fetch the console's third-party files from the npm registry (``make web-vendor``).

Each package is pinned by version and by its registry ``dist.integrity`` (sha512): the tarball is
downloaded, checked against that hash, and only the one built file the console loads is copied into
web/vendor/. web/SOURCES.md is rewritten from the same list. The files are checked in, so neither the
console nor its tests need the network; run this only to change a version (and update PINS).
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

WEB = Path(__file__).resolve().parent

# (package, version, registry tarball, dist.integrity, member in the tarball, file in web/vendor/, what for)
PINS = (
    ("htm", "3.1.1", "https://registry.npmjs.org/htm/-/htm-3.1.1.tgz",
     "sha512-983Vyg8NwUE7JkZ6NmOqpCZ+sh1bKv2iYTlUkzlWmA5JD2acKoxd4KVxbMmxX/85mtfdnDmTFoNKcg5DGAvxNQ==",
     "package/preact/standalone.module.js", "htm-preact-standalone.module.js",
     "Preact + hooks + htm in one ES module (no build step, no eval: works under script-src 'self')"),
    ("chart.js", "4.6.1", "https://registry.npmjs.org/chart.js/-/chart.js-4.6.1.tgz",
     "sha512-hJyniucsFmq//EvXYvJ6c6mahPoI3kaxdjVH8awTaJ/fDNWeSqqqArixMJWkWNN6fcYvPU3HneSANFNYtRi61g==",
     "package/dist/chart.umd.min.js", "chart.umd.min.js", "Charts (window.Chart)"),
)


def fetch(url: str, integrity: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    algorithm, expected = integrity.split("-", 1)
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"integrity mismatch for {url}: expected {integrity}, got {algorithm}-{actual}")
    return data


def sources_md() -> str:
    lines = ["# Third-party files of the web console", "",
             "Fetched from the npm registry by `make web-vendor` (web/fetch_vendor.py), which checks each tarball",
             "against its registry sha512 integrity and copies one built file into web/vendor/. Nothing else",
             "in web/ is generated; there is no bundler.", "",
             "| file | package | version | tarball | integrity (sha512 of the tarball) | file sha256 | use |",
             "|---|---|---|---|---|---|---|"]
    for name, version, url, integrity, _member, target, use in PINS:
        digest = hashlib.sha256((WEB / "vendor" / target).read_bytes()).hexdigest()
        lines.append(f"| vendor/{target} | {name} | {version} | {url} | `{integrity}` | `{digest}` | {use} |")
    lines += ["", "Licences: htm (Apache-2.0, bundling Preact, MIT), Chart.js (MIT).", ""]
    return "\n".join(lines)


def main() -> int:
    (WEB / "vendor").mkdir(exist_ok=True)
    for name, version, url, integrity, member, target, _use in PINS:
        data = fetch(url, integrity)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            extracted = tar.extractfile(member)
            if extracted is None:
                raise SystemExit(f"{member} is not a file in {url}")
            (WEB / "vendor" / target).write_bytes(extracted.read())
        print(f"web/vendor/{target}  <- {name}@{version} ({integrity[:20]}...)")
    (WEB / "SOURCES.md").write_text(sources_md())
    print("web/SOURCES.md written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
