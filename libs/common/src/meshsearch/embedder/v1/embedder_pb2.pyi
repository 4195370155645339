from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmbedOptions(_message.Message):
    __slots__ = ("normalize", "truncate", "prompt_name", "dimensions", "background")
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    normalize: bool
    truncate: bool
    prompt_name: str
    dimensions: int
    background: bool
    def __init__(self, normalize: _Optional[bool] = ..., truncate: _Optional[bool] = ..., prompt_name: _Optional[str] = ..., dimensions: _Optional[int] = ..., background: _Optional[bool] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "options")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    options: EmbedOptions
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[EmbedOptions, _Mapping]] = ...) -> None: ...

class Embeddings(_message.Message):
    __slots__ = ("vectors", "dimension", "token_counts", "model_id", "timing", "model_revision", "model_numerics")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMING_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NUMERICS_FIELD_NUMBER: _ClassVar[int]
    vectors: bytes
    dimension: int
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    model_id: str
    timing: Timing
    model_revision: str
    model_numerics: str
    def __init__(self, vectors: _Optional[bytes] = ..., dimension: _Optional[int] = ..., token_counts: _Optional[_Iterable[int]] = ..., model_id: _Optional[str] = ..., timing: _Optional[_Union[Timing, _Mapping]] = ..., model_revision: _Optional[str] = ..., model_numerics: _Optional[str] = ...) -> None: ...

class Timing(_message.Message):
    __slots__ = ("queue_ms", "tokenize_ms", "inference_ms", "backlog_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    TOKENIZE_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    tokenize_ms: float
    inference_ms: float
    backlog_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., tokenize_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., backlog_ms: _Optional[float] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings",)
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    embeddings: Embeddings
    def __init__(self, embeddings: _Optional[_Union[Embeddings, _Mapping]] = ...) -> None: ...

class EmbedStreamRequest(_message.Message):
    __slots__ = ("correlation_id", "texts", "options")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    texts: _containers.RepeatedScalarFieldContainer[str]
    options: EmbedOptions
    def __init__(self, correlation_id: _Optional[str] = ..., texts: _Optional[_Iterable[str]] = ..., options: _Optional[_Union[EmbedOptions, _Mapping]] = ...) -> None: ...

class StreamError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EmbedStreamResponse(_message.Message):
    __slots__ = ("correlation_id", "embeddings", "error")
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    correlation_id: str
    embeddings: Embeddings
    error: StreamError
    def __init__(self, correlation_id: _Optional[str] = ..., embeddings: _Optional[_Union[Embeddings, _Mapping]] = ..., error: _Optional[_Union[StreamError, _Mapping]] = ...) -> None: ...

class InfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InfoResponse(_message.Message):
    __slots__ = ("model_id", "model_revision", "dimension", "max_tokens", "dtype", "backend", "device", "prompt_names", "max_texts_per_request", "numerics", "tokens_per_second", "backend_selection")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_REVISION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAMES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXTS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    NUMERICS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_SELECTION_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_revision: str
    dimension: int
    max_tokens: int
    dtype: str
    backend: str
    device: str
    prompt_names: _containers.RepeatedScalarFieldContainer[str]
    max_texts_per_request: int
    numerics: str
    tokens_per_second: float
    backend_selection: BackendSelection
    def __init__(self, model_id: _Optional[str] = ..., model_revision: _Optional[str] = ..., dimension: _Optional[int] = ..., max_tokens: _Optional[int] = ..., dtype: _Optional[str] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., prompt_names: _Optional[_Iterable[str]] = ..., max_texts_per_request: _Optional[int] = ..., numerics: _Optional[str] = ..., tokens_per_second: _Optional[float] = ..., backend_selection: _Optional[_Union[BackendSelection, _Mapping]] = ...) -> None: ...

class BackendSelection(_message.Message):
    __slots__ = ("requested", "reason", "cached", "cpu", "candidates")
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    requested: str
    reason: str
    cached: bool
    cpu: str
    candidates: _containers.RepeatedCompositeFieldContainer[BackendCandidate]
    def __init__(self, requested: _Optional[str] = ..., reason: _Optional[str] = ..., cached: _Optional[bool] = ..., cpu: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[BackendCandidate, _Mapping]]] = ...) -> None: ...

class BackendCandidate(_message.Message):
    __slots__ = ("backend", "short_texts_per_second", "long_texts_per_second", "mean_cosine_to_reference", "eligible", "rejected_because")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SHORT_TEXTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MEAN_COSINE_TO_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_BECAUSE_FIELD_NUMBER: _ClassVar[int]
    backend: str
    short_texts_per_second: float
    long_texts_per_second: float
    mean_cosine_to_reference: float
    eligible: bool
    rejected_because: str
    def __init__(self, backend: _Optional[str] = ..., short_texts_per_second: _Optional[float] = ..., long_texts_per_second: _Optional[float] = ..., mean_cosine_to_reference: _Optional[float] = ..., eligible: _Optional[bool] = ..., rejected_because: _Optional[str] = ...) -> None: ...

class TokenizeRequest(_message.Message):
    __slots__ = ("texts", "prompt_name", "chunk_tokens", "chunk_overlap_tokens")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_NAME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_OVERLAP_TOKENS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    prompt_name: str
    chunk_tokens: int
    chunk_overlap_tokens: int
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., prompt_name: _Optional[str] = ..., chunk_tokens: _Optional[int] = ..., chunk_overlap_tokens: _Optional[int] = ...) -> None: ...

class TextChunks(_message.Message):
    __slots__ = ("starts", "ends")
    STARTS_FIELD_NUMBER: _ClassVar[int]
    ENDS_FIELD_NUMBER: _ClassVar[int]
    starts: _containers.RepeatedScalarFieldContainer[int]
    ends: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, starts: _Optional[_Iterable[int]] = ..., ends: _Optional[_Iterable[int]] = ...) -> None: ...

class TokenizeResponse(_message.Message):
    __slots__ = ("token_counts", "max_tokens", "chunks", "special_tokens")
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    max_tokens: int
    chunks: _containers.RepeatedCompositeFieldContainer[TextChunks]
    special_tokens: int
    def __init__(self, token_counts: _Optional[_Iterable[int]] = ..., max_tokens: _Optional[int] = ..., chunks: _Optional[_Iterable[_Union[TextChunks, _Mapping]]] = ..., special_tokens: _Optional[int] = ...) -> None: ...
