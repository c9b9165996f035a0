"""The operator's rules: a matching rule forces its method and says whether it still meets the goal; a bad rule
is refused up front with the fix."""

import pytest

from ansible_collections.walm.qemu.plugins.module_utils.errors import WalmError
from ansible_collections.walm.qemu.tests.unit.plugins.module_utils.test_decide_policy import HEAVY_AT_LINK, decide, good, run


RULE_DB = {"when": "starts_with(vm.name, 'db-')", "method": "precopy", "reason": "databases must be able to fall back"}


@pytest.mark.parametrize("name,rules,method,rule_index", [
    ("db-1", [RULE_DB], "precopy", 1),
    ("web-1", [RULE_DB], "postcopy", None),
    ("web-1", [RULE_DB, {"when": "workload_class.access == 'write-intensive'", "method": "hybrid",
                         "switch_after_passes": 2}], "hybrid", 2),
    ("web-1", [{"when": "predictions.precopy.converges", "method": "precopy"}], "postcopy", None),
    ("web-1", [{"when": "workload.dirty_rate_mib_s > `100`", "method": "hybrid"}], "hybrid", 1),
])
def test_operator_rules(name, rules, method, rule_index):
    result = run(HEAVY_AT_LINK, name=name, rules=rules)
    assert result["method"] == method
    if rule_index is None:
        assert result["rule"] is None
        return
    assert result["rule"]["index"] == rule_index
    assert result["reasons"][0].startswith("Operator rule %d (`%s`) chooses"
                                           % (rule_index, rules[rule_index - 1]["when"]))
    if rules[rule_index - 1].get("switch_after_passes"):
        assert result["switch_after_passes"] == rules[rule_index - 1]["switch_after_passes"]


def test_rule_forcing_a_nonconverging_precopy_says_so():
    result = run(HEAVY_AT_LINK, name="db-1", rules=[RULE_DB])
    first = result["reasons"][0]
    assert result["meets_goal"] is False
    assert "databases must be able to fall back" in first and "The model alone would choose post-copy" in first
    assert "pre-copy is predicted not to converge" in first


BAD = [
    ("unknown-method", good(rules=[{"when": "vm.name == 'a'", "method": "teleport"}]),
     r"rule 1: unknown method 'teleport'; choose one of precopy, postcopy, hybrid"),
    ("bad-jmespath", good(rules=[RULE_DB, {"when": "vm.name ==", "method": "precopy"}]),
     r"rule 2: `when` is not a valid JMESPath expression \(vm\.name ==\)"),
    ("unknown-function", good(rules=[{"when": "startswith(vm.name, 'db-')", "method": "precopy"}]),
     r"rule 1: `when` \(startswith\(vm\.name, 'db-'\)\) calls unknown JMESPath function startswith"),
    ("rule-no-when", good(rules=[{"method": "precopy"}]), r"rule 1 needs `when`"),
    ("rule-extra-key", good(rules=[dict(RULE_DB, methd="x")]), r"rule 1 has unknown keys methd"),
    ("rule-postcopy-not-allowed", good(allow_postcopy=False, rules=[{"when": "vm", "method": "postcopy"}]),
     r"rule 1 chooses postcopy, which runs post-copy, but allow_postcopy is false"),
    ("rule-switch-not-hybrid", good(rules=[dict(RULE_DB, switch_after_passes=2)]),
     r"switch_after_passes applies to method hybrid only"),
    ("rule-runtime-error", good(rules=[{"when": "starts_with(vm.missing, 'db-')", "method": "precopy"}]),
     r"rule 1 \(`starts_with\(vm\.missing, 'db-'\)`\) failed on VM 'vm1'"),
    ("rules-not-list", good(rules={"when": "vm"}), r"rules must be a list"),
]


@pytest.mark.parametrize("params,message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_fails_clearly(params, message):
    with pytest.raises(WalmError, match=message):
        decide(params)
