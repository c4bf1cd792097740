"""Entry point of ``feast apply`` run in this folder: the xemb objects for ``$XEMB_ROOT``.

    cd feature_repo && XEMB_ROOT=/path/to/root feast apply
    XEMB_ROOT=/path/to/root feast materialize-incremental $(date -u +%Y-%m-%dT%H:%M:%S)

``xemb build`` registers the same objects (``repo.build_definitions``) with file sources
relative to ``<root>/feast``; here they are absolute, because this folder is the repo path.
"""

import os

from xemb.errors import ConfigError
from xemb.feature_repo.repo import build_definitions

_root = os.environ.get("XEMB_ROOT")
if not _root:
    raise ConfigError("set XEMB_ROOT to the xemb build root (the folder holding CURRENT)")
_defs = build_definitions(_root)

item, user, target_domain, intent = _defs.entities
item_embeddings, user_intents, atomic_intents, user_profiles = _defs.views
(item_user_affinity,) = _defs.on_demand
xemb_ranking, xemb_items, xemb_users, xemb_intents, xemb_user_profiles = _defs.services
