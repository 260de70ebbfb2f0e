"""Choosing a kernel per weight and problem size: the ``Inspector`` (cache key, cache,
candidates, timing, executor), its schedules and config spaces, the timing protocol and the
tuning cache."""
from .configs import ConfigSpace, create_configs
from .inspector import Inspector
from .kernels import executor_for
from .report import InspectReport
from .schedules import Schedule

__all__ = ["ConfigSpace", "create_configs", "Inspector", "InspectReport", "Schedule", "executor_for"]
