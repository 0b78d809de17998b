"""hashlib_vit: Vision-Transformer deep hashing, reproducible from notebooks.

The flow: protocol -> data -> model (backbone + hash head) -> loss -> train -> encode -> metrics ->
run directory -> tables. ``run_experiment`` walks it for one experiment.
"""
__version__ = "0.1.0"

from .errors import ConfigError, DataError, DiskFullError, DivergenceError, HashlibVitError, WriteError  # noqa: E402


def __getattr__(name):  # lazy: importing the package stays cheap
    if name == "RunConfig":
        from .config import RunConfig

        return RunConfig
    if name in ("run_experiment", "RunResult"):
        from . import experiment

        return getattr(experiment, name)
    if name == "map_at_k":
        from .retrieval import map_at_k

        return map_at_k
    raise AttributeError(f"module 'hashlib_vit' has no attribute {name!r}")


__all__ = ["__version__", "ConfigError", "DataError", "DiskFullError", "DivergenceError", "HashlibVitError", "WriteError",
           "run_experiment", "RunConfig", "RunResult", "map_at_k"]
