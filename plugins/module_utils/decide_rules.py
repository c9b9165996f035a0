# -*- coding: utf-8 -*-
# Copyright: WALM developers
# Apache License 2.0 (see LICENSE)
"""The operator's rules: JMESPath expressions over the probe result that force a method, checked up front,
matched per VM, and applied with a sentence on whether the forced method still meets the goal."""

from __future__ import absolute_import, division, print_function

from .decide_model import as_number
from .decide_reasons import label_of, msecs, secs
from .errors import WalmError
from .methods import METHOD_BY_NAME, METHODS

try:
    import jmespath
    from jmespath.exceptions import JMESPathError
    from jmespath.functions import Functions as _JMESPathFunctions
    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - the collection's requirements install it
    HAS_JMESPATH = False

RULE_KEYS = ("when", "method", "reason", "switch_after_passes")


def _jmespath_true(value):
    """JMESPath truthiness: false, null and empty strings, lists and objects are false; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)) and not value:
        return False
    return True


def _function_names(node):
    """Names of the functions a parsed JMESPath expression calls."""
    names = []
    if isinstance(node, dict):
        if node.get("type") == "function_expression":
            names.append(node.get("value"))
        for child in node.get("children", []):
            names.extend(_function_names(child))
    return names


def compile_rules(rules, allow_postcopy=True):
    """Check the operator's rules up front: shape, method, JMESPath syntax and function names."""
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise WalmError("rules must be a list of {when, method, reason} dicts")
    if rules and not HAS_JMESPATH:
        raise WalmError("rules need the jmespath Python library on the host that runs walm_decide "
                        "(pip install jmespath)")
    known_functions = set(_JMESPathFunctions.FUNCTION_TABLE) if rules else set()
    compiled = []
    for index, rule in enumerate(rules, 1):
        if not isinstance(rule, dict):
            raise WalmError("rule %d must be a dict with when, method and an optional reason, not %r"
                            % (index, rule))
        unknown = sorted(set(rule) - set(RULE_KEYS))
        if unknown:
            raise WalmError("rule %d has unknown keys %s; a rule has %s" % (index, ", ".join(unknown),
                                                                            ", ".join(RULE_KEYS)))
        when = rule.get("when")
        if not isinstance(when, str) or not when.strip():
            raise WalmError("rule %d needs `when`: a JMESPath expression over the probe result, e.g. "
                            "\"starts_with(vm.name, 'db-')\"" % index)
        method = rule.get("method")
        if method not in METHODS:
            raise WalmError("rule %d: unknown method %r; choose one of %s" % (index, method, ", ".join(METHODS)))
        if METHOD_BY_NAME[method].postcopy and not allow_postcopy:
            raise WalmError("rule %d chooses %s, which runs post-copy, but allow_postcopy is false; allow "
                            "post-copy or change the rule" % (index, method))
        switch = rule.get("switch_after_passes")
        if switch is not None:
            if not METHOD_BY_NAME[method].switch_point:
                raise WalmError("rule %d: switch_after_passes applies to method %s only" % (index, " or ".join(
                    m for m in METHODS if METHOD_BY_NAME[m].switch_point)))
            switch = int(as_number(switch, "rule %d switch_after_passes" % index, minimum=1))
        try:
            expression = jmespath.compile(when)
        except JMESPathError as exc:
            raise WalmError("rule %d: `when` is not a valid JMESPath expression (%s): %s"
                            % (index, when, str(exc).replace("\n", " ")))
        bad = sorted(set(f for f in _function_names(expression.parsed) if f not in known_functions))
        if bad:
            raise WalmError("rule %d: `when` (%s) calls unknown JMESPath function %s; JMESPath has %s"
                            % (index, when, ", ".join(bad), ", ".join(sorted(known_functions))))
        compiled.append({"index": index, "when": when, "method": method, "expression": expression,
                         "reason": str(rule.get("reason") or "").strip(), "switch_after_passes": switch})
    return compiled


def match_rule(rules, document, vm_name):
    """The first rule whose expression is true for this document, or None."""
    for rule in rules:
        try:
            value = rule["expression"].search(document)
        except JMESPathError as exc:
            raise WalmError("rule %d (`%s`) failed on VM '%s': %s; guard the expression for missing keys "
                            "(e.g. `vm.name && starts_with(vm.name, 'db-')`)"
                            % (rule["index"], rule["when"], vm_name, str(exc).replace("\n", " ")))
        if _jmespath_true(value):
            return rule
    return None


def apply_rule(rule, choice, model, chosen):
    """The prediction an operator rule forces, whether it meets the goal, and the sentence saying so."""
    forced = {"precopy": choice.pre, "postcopy": choice.post, "hybrid": choice.hybrid}[rule["method"]]
    if rule["method"] == "hybrid" and rule["switch_after_passes"]:
        forced = model.hybrid(rule["switch_after_passes"], choice.t["precopy_max_dirty_pct_of_link"])
    text = "Operator rule %d (`%s`) chooses %s%s" % (rule["index"], rule["when"], METHOD_BY_NAME[rule["method"]].label,
                                                     ": " + rule["reason"] if rule["reason"] else "")
    text = text.rstrip(".") + "."
    if forced is not chosen:
        text += " The model alone would choose %s." % label_of(chosen)
    ok = choice.meets(forced)
    if not forced["converges"]:
        text += (" It does not meet the goal: pre-copy is predicted not to converge. walm_migrate's run-time check "
                 "(adapt) acts at the first pass that confirms it (post-copy where allowed, else a higher downtime "
                 "limit, throttling or abort, which keeps the VM running on the source); without it timeout_s ends "
                 "the migration and its timeout action applies.")
    elif forced["downtime_ms"] > choice.limit:
        text += " It does not meet the goal: predicted downtime %s exceeds the %s limit." % (
            msecs(forced["downtime_ms"]), msecs(choice.limit))
    elif not ok:
        text += " It does not meet the goal: %s exceeds the %s time budget." % (
            secs(forced["total_time_ms"]), secs(choice.budget_ms))
    return forced, ok, text
