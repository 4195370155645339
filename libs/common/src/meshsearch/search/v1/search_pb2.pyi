import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    METRIC_COSINE: _ClassVar[Metric]
    METRIC_DOT: _ClassVar[Metric]
    METRIC_L2: _ClassVar[Metric]

class Storage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_UNSPECIFIED: _ClassVar[Storage]
    STORAGE_FLOAT32: _ClassVar[Storage]
    STORAGE_FLOAT16: _ClassVar[Storage]

class IndexState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INDEX_STATE_UNSPECIFIED: _ClassVar[IndexState]
    INDEX_STATE_READY: _ClassVar[IndexState]
    INDEX_STATE_BUILDING: _ClassVar[IndexState]
    INDEX_STATE_DEFERRED: _ClassVar[IndexState]
METRIC_UNSPECIFIED: Metric
METRIC_COSINE: Metric
METRIC_DOT: Metric
METRIC_L2: Metric
STORAGE_UNSPECIFIED: Storage
STORAGE_FLOAT32: Storage
STORAGE_FLOAT16: Storage
INDEX_STATE_UNSPECIFIED: IndexState
INDEX_STATE_READY: IndexState
INDEX_STATE_BUILDING: IndexState
INDEX_STATE_DEFERRED: IndexState

class EmbeddingModel(_message.Message):
    __slots__ = ("id", "revision", "dimension", "normalized", "numerics")
    ID_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    NUMERICS_FIELD_NUMBER: _ClassVar[int]
    id: str
    revision: str
    dimension: int
    normalized: bool
    numerics: str
    def __init__(self, id: _Optional[str] = ..., revision: _Optional[str] = ..., dimension: _Optional[int] = ..., normalized: _Optional[bool] = ..., numerics: _Optional[str] = ...) -> None: ...

class HnswParams(_message.Message):
    __slots__ = ("m", "ef_construction")
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    m: int
    ef_construction: int
    def __init__(self, m: _Optional[int] = ..., ef_construction: _Optional[int] = ...) -> None: ...

class Collection(_message.Message):
    __slots__ = ("name", "dimension", "metric", "storage", "hnsw", "model", "point_count", "index_state", "create_time", "chunk_tokens", "chunk_overlap_tokens", "mixed_numerics", "chunk_truncate", "shards")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    POINT_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_STATE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIXED_NUMERICS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    dimension: int
    metric: Metric
    storage: Storage
    hnsw: HnswParams
    model: EmbeddingModel
    point_count: int
    index_state: IndexState
    create_time: _timestamp_pb2.Timestamp
    chunk_tokens: int
    chunk_overlap_tokens: int
    mixed_numerics: bool
    chunk_truncate: bool
    shards: int
    def __init__(self, name: _Optional[str] = ..., dimension: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., storage: _Optional[_Union[Storage, str]] = ..., hnsw: _Optional[_Union[HnswParams, _Mapping]] = ..., model: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., point_count: _Optional[int] = ..., index_state: _Optional[_Union[IndexState, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., chunk_tokens: _Optional[int] = ..., chunk_overlap_tokens: _Optional[int] = ..., mixed_numerics: _Optional[bool] = ..., chunk_truncate: _Optional[bool] = ..., shards: _Optional[int] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("data", "dimension")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dimension: int
    def __init__(self, data: _Optional[bytes] = ..., dimension: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("id", "vector", "text", "metadata", "chunks")
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector: Vector
    text: str
    metadata: _struct_pb2.Struct
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    def __init__(self, id: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., text: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("vector", "start", "end")
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    vector: Vector
    start: int
    end: int
    def __init__(self, vector: _Optional[_Union[Vector, _Mapping]] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("chunk", "start", "end")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    chunk: int
    start: int
    end: int
    def __init__(self, chunk: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class CreateCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class GetCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetCollectionResponse(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: Collection
    def __init__(self, collection: _Optional[_Union[Collection, _Mapping]] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ("tenant", "after", "limit", "skip_counts")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SKIP_COUNTS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    after: str
    limit: int
    skip_counts: bool
    def __init__(self, tenant: _Optional[str] = ..., after: _Optional[str] = ..., limit: _Optional[int] = ..., skip_counts: _Optional[bool] = ...) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[Collection]
    def __init__(self, collections: _Optional[_Iterable[_Union[Collection, _Mapping]]] = ...) -> None: ...

class DeleteCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteCollectionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "points", "model", "receipt")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    collection: str
    points: _containers.RepeatedCompositeFieldContainer[Point]
    model: EmbeddingModel
    receipt: str
    def __init__(self, collection: _Optional[str] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., model: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., receipt: _Optional[str] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("index", "id", "code", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: str
    code: int
    message: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[str] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("upserted_count", "errors", "already_applied")
    UPSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_APPLIED_FIELD_NUMBER: _ClassVar[int]
    upserted_count: int
    errors: _containers.RepeatedCompositeFieldContainer[ItemError]
    already_applied: bool
    def __init__(self, upserted_count: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[ItemError, _Mapping]]] = ..., already_applied: _Optional[bool] = ...) -> None: ...

class GetReceiptsRequest(_message.Message):
    __slots__ = ("collection", "receipts")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    RECEIPTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    receipts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, collection: _Optional[str] = ..., receipts: _Optional[_Iterable[str]] = ...) -> None: ...

class GetReceiptsResponse(_message.Message):
    __slots__ = ("recorded",)
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    recorded: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, recorded: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteReceiptsRequest(_message.Message):
    __slots__ = ("collection", "prefix")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    collection: str
    prefix: str
    def __init__(self, collection: _Optional[str] = ..., prefix: _Optional[str] = ...) -> None: ...

class DeleteReceiptsResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("points", "missing_ids")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    missing_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., missing_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    filter: Filter
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("collection", "vector", "k", "ef_search", "exact", "score_threshold", "include_vectors", "filter", "text", "model", "omit_text", "omit_metadata", "allow_partial_results")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EF_SEARCH_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OMIT_TEXT_FIELD_NUMBER: _ClassVar[int]
    OMIT_METADATA_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_RESULTS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    vector: Vector
    k: int
    ef_search: int
    exact: bool
    score_threshold: float
    include_vectors: bool
    filter: Filter
    text: str
    model: EmbeddingModel
    omit_text: bool
    omit_metadata: bool
    allow_partial_results: bool
    def __init__(self, collection: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., k: _Optional[int] = ..., ef_search: _Optional[int] = ..., exact: _Optional[bool] = ..., score_threshold: _Optional[float] = ..., include_vectors: _Optional[bool] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., text: _Optional[str] = ..., model: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., omit_text: _Optional[bool] = ..., omit_metadata: _Optional[bool] = ..., allow_partial_results: _Optional[bool] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("must", "should", "must_not")
    MUST_FIELD_NUMBER: _ClassVar[int]
    SHOULD_FIELD_NUMBER: _ClassVar[int]
    MUST_NOT_FIELD_NUMBER: _ClassVar[int]
    must: _containers.RepeatedCompositeFieldContainer[Condition]
    should: _containers.RepeatedCompositeFieldContainer[Condition]
    must_not: _containers.RepeatedCompositeFieldContainer[Condition]
    def __init__(self, must: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., should: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ..., must_not: _Optional[_Iterable[_Union[Condition, _Mapping]]] = ...) -> None: ...

class Condition(_message.Message):
    __slots__ = ("field", "filter")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    field: FieldCondition
    filter: Filter
    def __init__(self, field: _Optional[_Union[FieldCondition, _Mapping]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class FieldCondition(_message.Message):
    __slots__ = ("key", "eq", "range", "exists")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EQ_FIELD_NUMBER: _ClassVar[int]
    IN_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    key: str
    eq: _struct_pb2.Value
    range: Range
    exists: bool
    def __init__(self, key: _Optional[str] = ..., eq: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., range: _Optional[_Union[Range, _Mapping]] = ..., exists: _Optional[bool] = ..., **kwargs) -> None: ...

class ValueList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("gt", "gte", "lt", "lte")
    GT_FIELD_NUMBER: _ClassVar[int]
    GTE_FIELD_NUMBER: _ClassVar[int]
    LT_FIELD_NUMBER: _ClassVar[int]
    LTE_FIELD_NUMBER: _ClassVar[int]
    gt: float
    gte: float
    lt: float
    lte: float
    def __init__(self, gt: _Optional[float] = ..., gte: _Optional[float] = ..., lt: _Optional[float] = ..., lte: _Optional[float] = ...) -> None: ...

class ScoredPoint(_message.Message):
    __slots__ = ("point", "score", "span")
    POINT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    point: Point
    score: float
    span: Span
    def __init__(self, point: _Optional[_Union[Point, _Mapping]] = ..., score: _Optional[float] = ..., span: _Optional[_Union[Span, _Mapping]] = ...) -> None: ...

class QueryResponse(_message.Message):
    __slots__ = ("points", "unavailable_shards")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_SHARDS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[ScoredPoint]
    unavailable_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, points: _Optional[_Iterable[_Union[ScoredPoint, _Mapping]]] = ..., unavailable_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class QueryBatchRequest(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[QueryRequest]
    def __init__(self, queries: _Optional[_Iterable[_Union[QueryRequest, _Mapping]]] = ...) -> None: ...

class QueryBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[QueryResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[QueryResponse, _Mapping]]] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("collection", "filter", "limit", "cursor", "include_vectors")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: Filter
    limit: int
    cursor: str
    include_vectors: bool
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("points", "next_cursor")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    next_cursor: str
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class BulkUpsertRequest(_message.Message):
    __slots__ = ("collection", "points", "model", "columns")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    points: _containers.RepeatedCompositeFieldContainer[Point]
    model: EmbeddingModel
    columns: PointColumns
    def __init__(self, collection: _Optional[str] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., model: _Optional[_Union[EmbeddingModel, _Mapping]] = ..., columns: _Optional[_Union[PointColumns, _Mapping]] = ...) -> None: ...

class PointColumns(_message.Message):
    __slots__ = ("ids", "vectors", "dimension", "texts", "metadata_json")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: bytes
    dimension: int
    texts: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[bytes] = ..., dimension: _Optional[int] = ..., texts: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[_Iterable[str]] = ...) -> None: ...

class BulkUpsertResponse(_message.Message):
    __slots__ = ("upserted_count", "index_build_seconds")
    UPSERTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_BUILD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    upserted_count: int
    index_build_seconds: float
    def __init__(self, upserted_count: _Optional[int] = ..., index_build_seconds: _Optional[float] = ...) -> None: ...

class DeferIndexRequest(_message.Message):
    __slots__ = ("collection", "lease")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    collection: str
    lease: _duration_pb2.Duration
    def __init__(self, collection: _Optional[str] = ..., lease: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DeferIndexResponse(_message.Message):
    __slots__ = ("deferred", "deferred_until")
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    deferred: bool
    deferred_until: _timestamp_pb2.Timestamp
    def __init__(self, deferred: _Optional[bool] = ..., deferred_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BuildIndexRequest(_message.Message):
    __slots__ = ("collection",)
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    def __init__(self, collection: _Optional[str] = ...) -> None: ...

class BuildIndexResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
