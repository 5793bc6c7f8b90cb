"""The executable specification of ashmem and binder fd transfer: pure Python, no I/O.

`Spec(profile)` holds the abstract state of one test case; `Spec.observe(op, outcome)` says
whether an implementation's outcome is allowed and advances the state. `RULES` lists every rule
with its id, summary and source. `linearize` judges concurrent histories.
"""

from ashcheck.spec.check import Spec, Verdict
from ashcheck.spec.linearize import LINEARIZABLE, linearize
from ashcheck.spec.profiles import PROFILES, Profile
from ashcheck.spec.rules import RULES, Rule, rule_ids
from ashcheck.spec.state import SpecLimit

__all__ = ["LINEARIZABLE", "PROFILES", "RULES", "Profile", "Rule", "Spec", "SpecLimit", "Verdict", "linearize",
           "rule_ids"]
