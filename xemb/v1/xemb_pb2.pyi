from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Part(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PART_FULL: _ClassVar[Part]
    PART_TRANSFERABLE: _ClassVar[Part]
    PART_RESIDUAL: _ClassVar[Part]

class IntentSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INTENT_SOURCE_UNSPECIFIED: _ClassVar[IntentSource]
    INTENT_SOURCE_COMPOSED: _ClassVar[IntentSource]
    INTENT_SOURCE_STORED: _ClassVar[IntentSource]
PART_FULL: Part
PART_TRANSFERABLE: Part
PART_RESIDUAL: Part
INTENT_SOURCE_UNSPECIFIED: IntentSource
INTENT_SOURCE_COMPOSED: IntentSource
INTENT_SOURCE_STORED: IntentSource

class Tensor(_message.Message):
    __slots__ = ("data", "shape")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, data: _Optional[bytes] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class GetItemEmbeddingsRequest(_message.Message):
    __slots__ = ("item_ids", "part", "version")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    part: Part
    version: str
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., part: _Optional[_Union[Part, str]] = ..., version: _Optional[str] = ...) -> None: ...

class GetItemEmbeddingsResponse(_message.Message):
    __slots__ = ("vectors", "found", "version", "domains")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    vectors: Tensor
    found: _containers.RepeatedScalarFieldContainer[bool]
    version: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, vectors: _Optional[_Union[Tensor, _Mapping]] = ..., found: _Optional[_Iterable[bool]] = ..., version: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ...) -> None: ...

class History(_message.Message):
    __slots__ = ("item_ids", "domains", "timestamps")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    domains: _containers.RepeatedScalarFieldContainer[str]
    timestamps: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., domains: _Optional[_Iterable[str]] = ..., timestamps: _Optional[_Iterable[int]] = ...) -> None: ...

class ComposeUserIntentRequest(_message.Message):
    __slots__ = ("history", "user_id", "target_domain", "top_intents", "version")
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    TOP_INTENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    history: History
    user_id: str
    target_domain: str
    top_intents: int
    version: str
    def __init__(self, history: _Optional[_Union[History, _Mapping]] = ..., user_id: _Optional[str] = ..., target_domain: _Optional[str] = ..., top_intents: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class Intent(_message.Message):
    __slots__ = ("intent_id", "label", "weight", "domain_label")
    INTENT_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_LABEL_FIELD_NUMBER: _ClassVar[int]
    intent_id: int
    label: str
    weight: float
    domain_label: str
    def __init__(self, intent_id: _Optional[int] = ..., label: _Optional[str] = ..., weight: _Optional[float] = ..., domain_label: _Optional[str] = ...) -> None: ...

class ComposeUserIntentResponse(_message.Message):
    __slots__ = ("user_vector", "intents", "version", "source", "unknown_item_ids", "items_used", "intent_entropy", "intent_entropy_ratio")
    USER_VECTOR_FIELD_NUMBER: _ClassVar[int]
    INTENTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_USED_FIELD_NUMBER: _ClassVar[int]
    INTENT_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    INTENT_ENTROPY_RATIO_FIELD_NUMBER: _ClassVar[int]
    user_vector: Tensor
    intents: _containers.RepeatedCompositeFieldContainer[Intent]
    version: str
    source: IntentSource
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[int]
    items_used: int
    intent_entropy: float
    intent_entropy_ratio: float
    def __init__(self, user_vector: _Optional[_Union[Tensor, _Mapping]] = ..., intents: _Optional[_Iterable[_Union[Intent, _Mapping]]] = ..., version: _Optional[str] = ..., source: _Optional[_Union[IntentSource, str]] = ..., unknown_item_ids: _Optional[_Iterable[int]] = ..., items_used: _Optional[int] = ..., intent_entropy: _Optional[float] = ..., intent_entropy_ratio: _Optional[float] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("vector", "item_id", "user", "domain", "k", "exclude_ids", "version")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_IDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    vector: Tensor
    item_id: int
    user: ComposeUserIntentRequest
    domain: str
    k: int
    exclude_ids: _containers.RepeatedScalarFieldContainer[int]
    version: str
    def __init__(self, vector: _Optional[_Union[Tensor, _Mapping]] = ..., item_id: _Optional[int] = ..., user: _Optional[_Union[ComposeUserIntentRequest, _Mapping]] = ..., domain: _Optional[str] = ..., k: _Optional[int] = ..., exclude_ids: _Optional[_Iterable[int]] = ..., version: _Optional[str] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("item_ids", "scores", "version", "exact")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    version: str
    exact: bool
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., version: _Optional[str] = ..., exact: _Optional[bool] = ...) -> None: ...

class EncodeItemsRequest(_message.Message):
    __slots__ = ("texts", "domain", "version")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    domain: str
    version: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., domain: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class EncodeItemsResponse(_message.Message):
    __slots__ = ("full", "transferable", "residual", "version")
    FULL_FIELD_NUMBER: _ClassVar[int]
    TRANSFERABLE_FIELD_NUMBER: _ClassVar[int]
    RESIDUAL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    full: Tensor
    transferable: Tensor
    residual: Tensor
    version: str
    def __init__(self, full: _Optional[_Union[Tensor, _Mapping]] = ..., transferable: _Optional[_Union[Tensor, _Mapping]] = ..., residual: _Optional[_Union[Tensor, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class VersionInfo(_message.Message):
    __slots__ = ("version", "created_at", "domains", "dims", "counts", "serving", "loaded", "current", "params_json")
    class DimsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DOMAINS_FIELD_NUMBER: _ClassVar[int]
    DIMS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    version: str
    created_at: str
    domains: _containers.RepeatedScalarFieldContainer[str]
    dims: _containers.ScalarMap[str, int]
    counts: _containers.ScalarMap[str, int]
    serving: bool
    loaded: bool
    current: bool
    params_json: str
    def __init__(self, version: _Optional[str] = ..., created_at: _Optional[str] = ..., domains: _Optional[_Iterable[str]] = ..., dims: _Optional[_Mapping[str, int]] = ..., counts: _Optional[_Mapping[str, int]] = ..., serving: _Optional[bool] = ..., loaded: _Optional[bool] = ..., current: _Optional[bool] = ..., params_json: _Optional[str] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions", "serving")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    SERVING_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[VersionInfo]
    serving: str
    def __init__(self, versions: _Optional[_Iterable[_Union[VersionInfo, _Mapping]]] = ..., serving: _Optional[str] = ...) -> None: ...

class RowError(_message.Message):
    __slots__ = ("code", "field", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    field: str
    message: str
    def __init__(self, code: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ComposeUserIntentBatchRequest(_message.Message):
    __slots__ = ("requests", "version")
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ComposeUserIntentRequest]
    version: str
    def __init__(self, requests: _Optional[_Iterable[_Union[ComposeUserIntentRequest, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

class ComposedUser(_message.Message):
    __slots__ = ("source", "intents", "unknown_item_ids", "items_used", "intent_entropy", "intent_entropy_ratio", "error")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    INTENTS_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_USED_FIELD_NUMBER: _ClassVar[int]
    INTENT_ENTROPY_FIELD_NUMBER: _ClassVar[int]
    INTENT_ENTROPY_RATIO_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    source: IntentSource
    intents: _containers.RepeatedCompositeFieldContainer[Intent]
    unknown_item_ids: _containers.RepeatedScalarFieldContainer[int]
    items_used: int
    intent_entropy: float
    intent_entropy_ratio: float
    error: RowError
    def __init__(self, source: _Optional[_Union[IntentSource, str]] = ..., intents: _Optional[_Iterable[_Union[Intent, _Mapping]]] = ..., unknown_item_ids: _Optional[_Iterable[int]] = ..., items_used: _Optional[int] = ..., intent_entropy: _Optional[float] = ..., intent_entropy_ratio: _Optional[float] = ..., error: _Optional[_Union[RowError, _Mapping]] = ...) -> None: ...

class ComposeUserIntentBatchResponse(_message.Message):
    __slots__ = ("user_vectors", "results", "version")
    USER_VECTORS_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    user_vectors: Tensor
    results: _containers.RepeatedCompositeFieldContainer[ComposedUser]
    version: str
    def __init__(self, user_vectors: _Optional[_Union[Tensor, _Mapping]] = ..., results: _Optional[_Iterable[_Union[ComposedUser, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

class ItemIdList(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class UserList(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ComposeUserIntentRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ComposeUserIntentRequest, _Mapping]]] = ...) -> None: ...

class RetrieveBatchRequest(_message.Message):
    __slots__ = ("vectors", "item_ids", "users", "domain", "k", "exclude_ids", "version")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_IDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    vectors: Tensor
    item_ids: ItemIdList
    users: UserList
    domain: str
    k: int
    exclude_ids: _containers.RepeatedCompositeFieldContainer[ItemIdList]
    version: str
    def __init__(self, vectors: _Optional[_Union[Tensor, _Mapping]] = ..., item_ids: _Optional[_Union[ItemIdList, _Mapping]] = ..., users: _Optional[_Union[UserList, _Mapping]] = ..., domain: _Optional[str] = ..., k: _Optional[int] = ..., exclude_ids: _Optional[_Iterable[_Union[ItemIdList, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

class RetrieveResult(_message.Message):
    __slots__ = ("item_ids", "scores", "exact", "error")
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    exact: bool
    error: RowError
    def __init__(self, item_ids: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., exact: _Optional[bool] = ..., error: _Optional[_Union[RowError, _Mapping]] = ...) -> None: ...

class RetrieveBatchResponse(_message.Message):
    __slots__ = ("results", "version")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RetrieveResult]
    version: str
    def __init__(self, results: _Optional[_Iterable[_Union[RetrieveResult, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...
