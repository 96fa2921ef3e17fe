"""The oracle: exact Adam arithmetic (gmpy2/mpmath) with a running error scale."""
from adamconf.reference.adam import ExactState, ReferenceError, StepResult, step, trajectory
from adamconf.reference.bound import Verdict, compare
from adamconf.reference.state import AdamState, Hyper, Schedule, SparseGrad

__all__ = ["AdamState", "ExactState", "Hyper", "ReferenceError", "Schedule", "SparseGrad",
           "StepResult", "Verdict", "compare", "step", "trajectory"]
