"""Interchangeable instance types: requirement resolution against the shipped catalogue, the declaration
rules (bounded, one architecture), and that the catalogue is exactly the join of its two sources."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest

from components.instance_types import (
    MAX_INSTANCE_TYPES,
    InvalidTypeDeclarationError,
    Requirements,
    allowed_types,
    architecture,
    declare,
    is_accelerated,
    is_burstable,
    parse_catalogue,
    resolve,
)

DATA = Path(__file__).resolve().parents[4] / "data"
CATALOGUE_FILE = DATA / "catalogue" / "ec2_instance_types.csv"
EU_WEST_1_LARGE = ("m4.large", "m5.large", "m5a.large", "m5ad.large", "m5d.large", "m5n.large", "m6a.large",
                   "m6i.large")


@pytest.fixture(scope="module")
def catalogue():
    with CATALOGUE_FILE.open(newline="") as f:
        return parse_catalogue(f)


def test_the_catalogue_is_the_join_of_the_advisor_and_the_2022_price_table():
    prices = {r["instance_type"]: r["od_price_usd_per_hr"]
              for r in csv.DictReader((DATA / "spot" / "ondemand_us-east-1_linux_2022-06-28.csv").open())}
    specs = {}
    with gzip.open(DATA / "spot" / "spot_advisor_2025-06-28_flat.csv.gz", "rt") as f:
        for r in csv.DictReader(f):
            if r["os"] == "Linux":
                spec = (int(r["cores"]), float(r["ram_gb"]))
                assert specs.setdefault(r["instance_type"], spec) == spec, "a type's size differs by region"
    rows = list(csv.DictReader(CATALOGUE_FILE.open(newline="")))
    assert [r["instance_type"] for r in rows] == sorted(specs)
    for r in rows:
        assert (int(r["vcpus"]), float(r["memory_gib"])) == specs[r["instance_type"]]
        assert r["ondemand_usd_per_hr_us_east_1"] == prices.get(r["instance_type"], "")


def test_two_vcpus_and_8_gib_resolve_to_every_general_purpose_large_of_the_eu_west_1_set(catalogue):
    found = resolve(Requirements(vcpus_min=2, vcpus_max=2, memory_gib_min=8, memory_gib_max=8), catalogue,
                    own_type="m5.large")
    assert set(EU_WEST_1_LARGE) <= set(found)
    # the same architecture as the agent's own type, no burstable or accelerated family, cheapest first
    assert all(architecture(t) == "x86_64" and not is_burstable(t) and not is_accelerated(t) for t in found)
    assert "m6g.large" not in found and "t3.large" not in found and "m6g.large" in catalogue
    priced = [catalogue[t].ondemand_price for t in found if catalogue[t].ondemand_price is not None]
    assert priced == sorted(priced) and found[0] == "m5a.large"
    assert all(catalogue[t].ondemand_price is None for t in found[len(priced):])


def test_requirement_classes_select_graviton_burstable_and_accelerated(catalogue):
    arm = resolve(Requirements(vcpus_min=2, vcpus_max=2, memory_gib_min=8, memory_gib_max=8), catalogue,
                  own_type="m6g.large")
    assert "m6g.large" in arm and all(architecture(t) == "arm64" for t in arm)
    burst = resolve(Requirements(vcpus_min=2, vcpus_max=2, memory_gib_min=8, memory_gib_max=8, burstable=None),
                    catalogue, own_type="m5.large")
    assert {"t3.large", "t3a.large", "m5.large"} <= set(burst)
    gpus = resolve(Requirements(vcpus_min=4, vcpus_max=4, memory_gib_min=16, memory_gib_max=16, accelerated=True),
                   catalogue, own_type="g4dn.xlarge")
    assert "g4dn.xlarge" in gpus and all(is_accelerated(t) for t in gpus)


def test_declare_keeps_the_own_type_first_then_the_list_then_the_cheapest_matches(catalogue):
    reqs = Requirements(vcpus_min=2, vcpus_max=2, memory_gib_min=8, memory_gib_max=8)
    got = declare("m5n.large", ["m6i.large"], reqs, catalogue)
    assert got[:3] == ("m5n.large", "m6i.large", "m5a.large")
    assert len(got) == len(set(got)) <= MAX_INSTANCE_TYPES
    assert declare("m5.large", None, None, catalogue) is None
    # a wide requirement is cut at the bound, cheapest kept
    wide = declare("m5.large", None, Requirements(vcpus_min=2), catalogue)
    assert len(wide) == MAX_INSTANCE_TYPES and wide[0] == "m5.large"


@pytest.mark.parametrize("own, listed, reqs, field", [
    ("m5.large", ["m6g.large"], None, "instance_types"),  # another architecture than the AMI's
    ("m5.large", [f"m5.{n}xlarge" for n in range(2, 22)], None, "instance_types"),  # 21 with its own
    ("m5.large", ["M5.LARGE"], None, "instance_types"),
    ("m5.large", None, Requirements(vcpus_min=999), "requirements"),  # nothing that large
    ("m5.large", None, Requirements(vcpus_min=2, architecture="arm64"), "requirements.architecture"),
])
def test_unusable_declarations_are_refused_with_the_field(catalogue, own, listed, reqs, field):
    with pytest.raises(InvalidTypeDeclarationError) as err:
        declare(own, listed, reqs, catalogue)
    assert err.value.field == field


@pytest.mark.parametrize("kwargs", [dict(), dict(vcpus_min=4, vcpus_max=2), dict(memory_gib_min=-1),
                                    dict(vcpus_min=2, architecture="sparc"), dict(memory_gib_min=float("nan"))])
def test_malformed_requirements_are_refused(kwargs):
    with pytest.raises(InvalidTypeDeclarationError):
        Requirements(**kwargs)


def test_allowed_types_put_the_current_type_first_without_duplicates():
    assert allowed_types("m5a.large", ["m5.large", "m5a.large", "m6i.large"]) == ("m5a.large", "m5.large",
                                                                                  "m6i.large")
    assert allowed_types(None, None) == ()
