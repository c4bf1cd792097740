"""The published layout of a version: file names, table columns, ONNX signatures.

This module is the contract between the offline job (writer), Feast and the gRPC service
(readers). Change it only together with ``Manifest.format_version``.

``versions/<id>/``
    ``manifest.json``      :class:`xemb.store.Manifest`
    ``items.parquet``      one row per item, sorted by ``item_id``:
        ``item_id`` int64, ``domain`` string, ``text`` string,
        ``full``/``transferable``/``residual`` fixed_size_list<float32>[d]
        (``full = transferable + residual``; score = dot(user vector, ``full``)),
        ``intent_ids`` list<int64>[m], ``intent_weights`` list<float32>[m] (sum to 1),
        ``warm`` bool (the item was seen in behaviour and carries a collaborative residual).
    ``intents.parquet``    one row per atomic intent:
        ``intent_id`` int64, ``vector`` fixed_size_list<float32>[d] (transferable space),
        ``label`` string, ``support`` int64 (items whose top intent it is),
        ``domain_support`` string (JSON {domain: count}),
        ``domain_labels`` string (JSON {domain: label}: per domain, the titles of that domain
        whose top intent it is, nearest its centroid; domains without such items are absent),
        ``top_terms`` list<string> (words that set its items' titles apart from the catalogue).
    ``users.parquet``      one row per (training user, target domain):
        ``user_id`` string, ``target_domain`` string, ``vector`` fixed_size_list<float32>[d],
        ``top_intent_ids`` list<int64>, ``top_intent_weights`` list<float32>.
    ``user_profiles.parquet`` only in versions built with ``profile.enabled``: one row per
        training user: ``user_id`` string, ``profile`` string (the LLM's profile, LLM4CDSR),
        ``domain_summaries`` string (JSON {domain: summary} of the domains of their history),
        ``vector`` fixed_size_list<float32>[s] (the profile by the item encoder; s =
        ``manifest.dims["profile"]``, the semantic width).
    ``adapter.onnx``       cold-start adapter, text-only part (see ADAPTER_*); fusing the
                           description vectors too in versions built with
                           ``describe.use: separate`` (``models.adapter.descriptions``)
    ``composer.onnx``      the per-request model (see COMPOSER_*)
    ``encoder/``           ``model.onnx`` + ``tokenizer.json`` + ``encoder.json``: the frozen text
                           encoder for cold start without torch (see ENCODER_*)
    ``index_<domain>.faiss`` ANN index (inner product over ``full``; ids are item ids): HNSW
                           or IVF (flat or PQ codes), chosen per domain by size (``index:``
                           config); ``params.search`` holds the search knobs publish tuned for
                           it and ``metrics.index`` its measured recall@100
    ``items.arrow``        the serving copy of ``items.parquet`` (Arrow IPC file, uncompressed,
                           one record batch, so a server memory-maps it): rows ordered by
                           domain, then ``item_id``; ``item_id`` int64, ``domain`` int64 (index
                           into ``manifest.domains``), ``full``/``transferable``/``residual``
                           fixed_size_list<float32>[d], ``intent_ids`` fixed_size_list<int64>[m],
                           ``intent_weights`` fixed_size_list<float32>[m] (padding: id 0, weight 0)
    ``users.arrow``        the serving copy of ``users.parquet``: rows ordered by target domain,
                           then ``user_key`` (:func:`xemb.ipc_tables.user_keys`); ``user_key``
                           uint64, ``user_id`` string, ``target_domain`` int64, ``vector``
                           fixed_size_list<float32>[d], ``top_intent_ids``/``top_intent_weights``
                           fixed_size_list [t] (padded), ``top_len`` int64
    Versions published before the ``.arrow`` files existed are served from the Parquet tables.
"""

from __future__ import annotations

ITEMS = "items.parquet"
INTENTS = "intents.parquet"
USERS = "users.parquet"
USER_PROFILES = "user_profiles.parquet"
ITEMS_ARROW = "items.arrow"
USERS_ARROW = "users.arrow"
ADAPTER_ONNX = "adapter.onnx"
COMPOSER_ONNX = "composer.onnx"
ENCODER_DIR = "encoder"
ENCODER_ONNX = "encoder/model.onnx"
ENCODER_TOKENIZER = "encoder/tokenizer.json"
ENCODER_META = "encoder/encoder.json"


def index_file(domain: str) -> str:
    return f"index_{domain}.faiss"


VECTOR_PARTS = ("full", "transferable", "residual")

# adapter.onnx: semantic [B,S] float32, domain [B] int64 (index into manifest.domains),
#   item_row [B] int64 (row in items.parquet for catalogue items, -1 for new items)
#   -> transferable, residual, full [B,d] float32. Every published item vector was computed by
#   this model; new items (item_row -1) get the text-only path. Feed only the inputs the
#   session lists (a build without per-item vectors has no item_row input, one without
#   residual heads no domain input). A build with ``describe.use: separate`` also takes
#   descriptions [B,K,S] float32 (each description's semantic vector, K in the order of
#   ``manifest.models["adapter"]["descriptions"]``) and description_mask [B,K] float32
#   (1 = present); new items have no descriptions (mask 0: the title-only path). A reader
#   that predates these inputs refuses such a version at load (its smoke request fails),
#   it never serves it wrong. xemb.adapter_io.adapter_feeds builds the feeds.
ADAPTER_INPUTS = ("semantic", "domain", "item_row")
ADAPTER_DESCRIPTION_INPUTS = ("descriptions", "description_mask")
ADAPTER_OUTPUTS = ("transferable", "residual", "full")

# composer.onnx, histories right-aligned (most recent item last, padding in front):
#   hist_vec [B,L,d] float32 (items' ``full``), hist_domain [B,L] int64,
#   hist_mask [B,L] float32 (1 = real item), hist_intents [B,L,m] int64,
#   hist_intent_w [B,L,m] float32, target_domain [B] int64
#   -> user_vec [B,d] float32, intent_weights [B,K] float32 (sum to 1 over K intents)
COMPOSER_INPUTS = ("hist_vec", "hist_domain", "hist_mask", "hist_intents", "hist_intent_w",
                   "target_domain")
COMPOSER_OUTPUTS = ("user_vec", "intent_weights")

# encoder/model.onnx: input_ids, attention_mask [B,T] int64 -> semantic [B,S] (pooled, L2-normed)
ENCODER_INPUTS = ("input_ids", "attention_mask")
ENCODER_OUTPUTS = ("semantic",)
