"""The gRPC service and Feast's online store serve the same vectors for the same version."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.synthetic_serving import publish_synthetic, running
from xemb import feature_repo
from xemb.settings import XembConfig
from xemb.store import VersionStore

pytestmark = pytest.mark.integration


def feast_item_vectors(root, ids: np.ndarray, part: str = "full") -> np.ndarray:
    """Item vectors from Feast's get_online_features (the ranking path) for ``ids``."""
    from xemb.feature_repo import get_feature_store, names

    fs = get_feature_store(root)
    rows = [{names.ITEM_KEY: int(i)} for i in ids]
    got = fs.get_online_features(features=[f"{names.ITEM_VIEW}:{part}"],
                                 entity_rows=rows).to_dict()
    return np.asarray(got[part], np.float32)


def test_grpc_and_feast_agree_bit_for_bit(tmp_path):
    manifest = publish_synthetic(tmp_path, n_items=150)
    cfg = XembConfig.model_validate({"build": {"root": str(tmp_path)},
                                     "feast": {"online_store": "sqlite"}})
    feature_repo.publish_to_feast(cfg, VersionStore(tmp_path), manifest.version)
    ids = np.array([3, 77, 150, 1, 42], np.int64)
    with running(tmp_path) as (_, client):
        for part in ("full", "transferable", "residual"):
            ours = client.get_item_embeddings(ids, part).vectors
            assert ours.tobytes() == feast_item_vectors(tmp_path, ids, part).tobytes()
