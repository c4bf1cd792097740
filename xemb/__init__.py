"""xemb: cross-domain embedding store for recommender systems.

The core package is torch-free: config, errors, the version store and the CLI entry point.
The offline job is ``xemb.embedders``, the online service ``xemb.serving`` and the Feast
repository ``xemb.feature_repo``: installed under this one name, from the repository's
top-level folders ``embedders/``, ``serving/`` and ``feature_repo/``.
"""

__version__ = "0.1.0"
