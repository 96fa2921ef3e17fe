"""The oracle: exact Adam arithmetic (gmpy2/mpmath) with a running error scale."""
from reference.adam import ExactState, ReferenceError, StepResult, step, trajectory
from reference.bound import Verdict, compare
from reference.state import AdamState, Hyper, Schedule, SparseGrad

__all__ = ["AdamState", "ExactState", "Hyper", "ReferenceError", "Schedule", "SparseGrad",
           "StepResult", "Verdict", "compare", "step", "trajectory"]
