"""driftline: streaming drift monitoring for ML models in production."""

import importlib.metadata

# The one version lives in pyproject.toml; the installed package's metadata carries it here.
__version__ = importlib.metadata.version("driftline")
