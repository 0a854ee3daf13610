"""Grid methods: each a function `(plan, options) -> MethodResult` in its own module here, named
in `table.METHODS` (adding one is its file plus one line there)."""

from bindexp.interventions.methods.table import METHOD_NAMES, METHODS, Method, MethodOptions, MethodResult, Verification

__all__ = ["METHODS", "METHOD_NAMES", "Method", "MethodOptions", "MethodResult", "Verification"]
