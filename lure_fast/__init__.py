"""lure-fast: Learn, Unlearn and Relearn (LURE) and its baselines, fast and faithful."""
__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing a sub-package (kernels, loaders) loads nothing else of the project
    if name == "load_model":
        from .modelfile import load_model
        return load_model
    raise AttributeError(f"module 'lure_fast' has no attribute {name!r}")
