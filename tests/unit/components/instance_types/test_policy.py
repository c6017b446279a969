"""The instance-type policy: absurd types refused by default, an operator's allow-list admits them."""

import pytest

from components.instance_types.model import InstanceSpec
from components.instance_types.policy import TypePolicy, family, refusal, refusals

CATALOGUE = {"m5.large": InstanceSpec("m5.large", 2, 8.0, 0.096),
             "m5.24xlarge": InstanceSpec("m5.24xlarge", 96, 384.0, 4.608),
             "p3.2xlarge": InstanceSpec("p3.2xlarge", 8, 61.0, 3.06),
             "c6g.16xlarge": InstanceSpec("c6g.16xlarge", 64, 128.0, 2.176)}


@pytest.mark.parametrize("itype", ["m5.large", "c6g.16xlarge", "m5.t1234abcdxl", "m7i.2xlarge"])
def test_ordinary_types_pass_the_default_policy(itype):
    assert refusal(itype, TypePolicy(), CATALOGUE) is None


@pytest.mark.parametrize(("itype", "why"), [
    ("u-24tb1.112xlarge", "oversized"), ("m5.24xlarge", "96 vCPUs"), ("p3.2xlarge", "accelerated"),
    ("p5.48xlarge", "accelerated"), ("x2iedn.metal", "oversized"), ("m9.48xlarge", "oversized"),
    ("trn1.32xlarge", "accelerated"), ("nonsense", "not an instance type"),
])
def test_absurd_types_are_refused_by_default_with_a_reason(itype, why):
    assert why in (refusal(itype, TypePolicy(), CATALOGUE) or "")


def test_an_allow_list_admits_its_families_only_and_the_vcpu_cap_still_holds():
    policy = TypePolicy(max_vcpus=8, families=("p3", "m5"))
    assert refusal("p3.2xlarge", policy, CATALOGUE) is None  # accelerated, but named by the operator
    assert "not allowed" in refusal("c6g.16xlarge", policy, CATALOGUE)
    assert "vCPUs" in refusal("m5.24xlarge", policy, CATALOGUE)
    assert refusals(["m5.large", "p3.2xlarge", "c6g.16xlarge"], policy, CATALOGUE) == [
        refusal("c6g.16xlarge", policy, CATALOGUE)]


def test_family_names():
    assert (family("m5.large"), family("u-24tb1.112xlarge"), family("junk")) == ("m5", "u-24tb1", None)
