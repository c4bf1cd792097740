"""xemb: cross-domain embedding store for recommender systems.

The core package is torch-free: config, errors, the version store and the CLI entry point.
The offline job lives in ``embedders``, the online service in ``serving``, the Feast
repository in ``feature_repo``.
"""

__version__ = "0.1.0"
