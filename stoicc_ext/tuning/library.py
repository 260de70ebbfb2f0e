"""The library's own schedules (the three kernel schedules, densify and dense): what an Inspector
holds by default, how a user's ``Schedule`` becomes a typed one, and the executor of a saved config."""
from .dense import DENSE, DenseSchedule, dense_executor, is_dense_config
from .densify import DENSIFY, DensifySchedule, densify_executor
from .kernels import BUILTIN_SCHEDULES, KernelSchedule, executor_for, is_kernel_config
from .schedules import Schedule, TunedSchedule, UserSchedule

__all__ = ["default_schedules", "tuned_schedule", "is_library_config", "library_executor"]


def default_schedules():
    """``Inspector(use_default_configs=True)``'s schedules: every compiled instance, densify and dense."""
    out = {name: KernelSchedule(name) for name in BUILTIN_SCHEDULES}
    out[DENSIFY] = DensifySchedule()
    out[DENSE] = DenseSchedule()
    return out


def tuned_schedule(name, sch):
    """The typed schedule of ``Inspector(schedules={name: sch})``."""
    if isinstance(sch, TunedSchedule):
        return sch.renamed(name)
    if not isinstance(sch, Schedule):
        raise TypeError(f"schedules[{name!r}] must be a stoicc_ext.Schedule, got {type(sch).__name__}")
    if sch.builtin:
        if name not in BUILTIN_SCHEDULES:
            raise ValueError(f"schedules[{name!r}] has no launcher; only the built-in schedules "
                             f"{BUILTIN_SCHEDULES} may be given without one")
        return KernelSchedule(name, sch)
    return UserSchedule(name, sch)


def is_library_config(config):
    """Whether ``config`` belongs to one of the library's schedules (so it can be rebuilt from
    the config alone)."""
    return is_kernel_config(config) or config.get("schedule") == DENSIFY or is_dense_config(config)


def library_executor(config, N, K):
    """The executor of a config of the library's schedules (a saved model is rebuilt with it)."""
    if config.get("schedule") == DENSIFY:
        return densify_executor(config)
    if is_dense_config(config):
        return dense_executor()
    return executor_for(config, N, K)
