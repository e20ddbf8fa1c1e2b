"""A plug-in module that is found but fails to import (a missing dependency of the user's code)."""

raise ImportError("No module named 'a_missing_dependency' (raised on purpose by the fault-injection tests)")


def model(cfg):  # never reached
    raise AssertionError
