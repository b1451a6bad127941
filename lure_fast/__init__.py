"""lure-fast: Learn, Unlearn and Relearn (LURE) and its baselines, fast and faithful."""
__version__ = "0.1.0"
