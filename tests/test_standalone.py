"""The repository stands alone: every data file it reads is inside it and described, nothing points outside.

A user's clone has nothing beside it, so a missing data file is a failure here, never a skip.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from ml import traces

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
# Spelled in pieces so that this file does not match what it looks for.
OUTSIDE = re.compile("|".join([r"\.\./" + "shared", "/" + "work/", "/" + "root/", "/" + "home/"]))


def _tracked_files() -> list[Path]:
    """Files git tracks (and untracked ones it does not ignore); every file when this is not a checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return [p for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts and ".git" not in p.parts]
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def test_every_data_path_the_code_names_is_in_the_repository():
    named = [v for k, v in vars(traces).items() if k.isupper() and isinstance(v, Path) and k != "DATA"]
    assert named, "ml.traces names the shipped data files"
    for path in named:
        assert path.is_file(), f"{path} is missing"
        assert path.resolve().is_relative_to(DATA.resolve()), f"{path} is outside data/"


def test_data_sources_describe_exactly_the_files_shipped():
    sources = (DATA / "SOURCES.md").read_text()
    shipped = {p.relative_to(DATA).as_posix() for p in DATA.rglob("*") if p.is_file() and p.name != "SOURCES.md"}
    described = set(re.findall(r"^## `([^`]+)`", sources, flags=re.M))
    # A heading naming a folder (``aws_identity_certs/``) describes every file in it, and it must hold some.
    folders = {d for d in described if d.endswith("/")}
    for folder in folders:
        assert any(p.startswith(folder) for p in shipped), f"{folder} is described but empty"
    shipped = {p for p in shipped if not any(p.startswith(folder) for folder in folders)} | folders
    assert shipped == described, f"shipped but not described: {shipped - described}; " \
                                 f"described but missing: {described - shipped}"


def test_no_file_of_the_repository_points_outside_it():
    offenders = []
    for path in _tracked_files():
        if path.suffix in {".gz", ".joblib", ".png", ".zip", ".ico"}:
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("instance_type", ["m5.large", "m6i.4xlarge"])
def test_the_shipped_eu_west_1_subset_loads_all_three_zones(instance_type):
    trace = traces.load(prices=traces.EU_WEST_1_PRICES, instance_types=[instance_type],
                        ondemand_table=traces.ONDEMAND_2022, instance_type=instance_type, step_s=3600)
    assert sorted(trace.pools) == [f"{instance_type}.eu-west-1{z}" for z in "abc"]
    assert trace.ticks > 24 * 170 and trace.synthetic
