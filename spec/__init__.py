"""The Adam specification as data: API variants, testable clauses and tolerances."""
from .loader import SpecError, load_spec
from .model import Argument, Clause, Spec, Tolerance, Variant

__all__ = ["load_spec", "Spec", "Variant", "Clause", "Argument", "Tolerance", "SpecError"]
