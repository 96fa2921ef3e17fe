"""A corpus of small numpy Adam backends that calibrates and proves the conformance gate.

    CORRECT  four correct backends that differ only in floating-point op order; the
             gate must accept every one.
    BUGS     planted-bug backends, one realistic mistake each, with the spec area
             (`expected_clause_area`) that should catch it; the gate must reject each.

All follow adamconf.protocol (state in, state out) and derive from TextbookAdam.
"""
from .op_orders import CORRECT, FmaOrder, KernelOrder, LerpOrder, PageOrder
from .planted_bugs import AREAS, BUG_CLASSES, BUGS, PlantedBug
from .textbook import VARIANT_FEATURES, StepContext, TextbookAdam

__all__ = [
    "AREAS", "BUGS", "BUG_CLASSES", "CORRECT", "FmaOrder", "KernelOrder", "LerpOrder",
    "PageOrder", "PlantedBug", "StepContext", "TextbookAdam", "VARIANT_FEATURES",
]
