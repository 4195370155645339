// Types of the Node.js client (src/index.mjs). Message types come from src/generated, which
// `npm run generate` writes from protos/ with @grpc/proto-loader's generator (not committed).
import type * as grpc from "@grpc/grpc-js";

import type { CancelJobRequest, CancelJobRequest__Output } from "./generated/meshsearch/api/v1/CancelJobRequest";
import type { CancelJobResponse, CancelJobResponse__Output } from "./generated/meshsearch/api/v1/CancelJobResponse";
import type { CreateApiKeyRequest, CreateApiKeyRequest__Output } from "./generated/meshsearch/api/v1/CreateApiKeyRequest";
import type { CreateApiKeyResponse, CreateApiKeyResponse__Output } from "./generated/meshsearch/api/v1/CreateApiKeyResponse";
import type { CreateCollectionRequest, CreateCollectionRequest__Output } from "./generated/meshsearch/api/v1/CreateCollectionRequest";
import type { CreateCollectionResponse, CreateCollectionResponse__Output } from "./generated/meshsearch/api/v1/CreateCollectionResponse";
import type { DeleteCollectionRequest, DeleteCollectionRequest__Output } from "./generated/meshsearch/api/v1/DeleteCollectionRequest";
import type { DeleteCollectionResponse, DeleteCollectionResponse__Output } from "./generated/meshsearch/api/v1/DeleteCollectionResponse";
import type { DeleteDocumentsRequest, DeleteDocumentsRequest__Output } from "./generated/meshsearch/api/v1/DeleteDocumentsRequest";
import type { DeleteDocumentsResponse, DeleteDocumentsResponse__Output } from "./generated/meshsearch/api/v1/DeleteDocumentsResponse";
import type { EstimateIngestRequest, EstimateIngestRequest__Output } from "./generated/meshsearch/api/v1/EstimateIngestRequest";
import type { EstimateIngestResponse, EstimateIngestResponse__Output } from "./generated/meshsearch/api/v1/EstimateIngestResponse";
import type { GetCollectionRequest, GetCollectionRequest__Output } from "./generated/meshsearch/api/v1/GetCollectionRequest";
import type { GetCollectionResponse, GetCollectionResponse__Output } from "./generated/meshsearch/api/v1/GetCollectionResponse";
import type { GetDocumentsRequest, GetDocumentsRequest__Output } from "./generated/meshsearch/api/v1/GetDocumentsRequest";
import type { GetDocumentsResponse, GetDocumentsResponse__Output } from "./generated/meshsearch/api/v1/GetDocumentsResponse";
import type { GetJobRequest, GetJobRequest__Output } from "./generated/meshsearch/api/v1/GetJobRequest";
import type { GetJobResponse, GetJobResponse__Output } from "./generated/meshsearch/api/v1/GetJobResponse";
import type { IndexDocumentsRequest, IndexDocumentsRequest__Output } from "./generated/meshsearch/api/v1/IndexDocumentsRequest";
import type { IndexDocumentsResponse, IndexDocumentsResponse__Output } from "./generated/meshsearch/api/v1/IndexDocumentsResponse";
import type { ListApiKeysRequest, ListApiKeysRequest__Output } from "./generated/meshsearch/api/v1/ListApiKeysRequest";
import type { ListApiKeysResponse, ListApiKeysResponse__Output } from "./generated/meshsearch/api/v1/ListApiKeysResponse";
import type { ListCollectionsRequest, ListCollectionsRequest__Output } from "./generated/meshsearch/api/v1/ListCollectionsRequest";
import type { ListCollectionsResponse, ListCollectionsResponse__Output } from "./generated/meshsearch/api/v1/ListCollectionsResponse";
import type { ListDeadLettersRequest, ListDeadLettersRequest__Output } from "./generated/meshsearch/api/v1/ListDeadLettersRequest";
import type { ListDeadLettersResponse, ListDeadLettersResponse__Output } from "./generated/meshsearch/api/v1/ListDeadLettersResponse";
import type { ListDocumentsRequest, ListDocumentsRequest__Output } from "./generated/meshsearch/api/v1/ListDocumentsRequest";
import type { ListDocumentsResponse, ListDocumentsResponse__Output } from "./generated/meshsearch/api/v1/ListDocumentsResponse";
import type { ListJobsRequest, ListJobsRequest__Output } from "./generated/meshsearch/api/v1/ListJobsRequest";
import type { ListJobsResponse, ListJobsResponse__Output } from "./generated/meshsearch/api/v1/ListJobsResponse";
import type { RedriveDeadLettersRequest, RedriveDeadLettersRequest__Output } from "./generated/meshsearch/api/v1/RedriveDeadLettersRequest";
import type { RedriveDeadLettersResponse, RedriveDeadLettersResponse__Output } from "./generated/meshsearch/api/v1/RedriveDeadLettersResponse";
import type { RevokeApiKeyRequest, RevokeApiKeyRequest__Output } from "./generated/meshsearch/api/v1/RevokeApiKeyRequest";
import type { RevokeApiKeyResponse, RevokeApiKeyResponse__Output } from "./generated/meshsearch/api/v1/RevokeApiKeyResponse";
import type { SearchBatchRequest, SearchBatchRequest__Output } from "./generated/meshsearch/api/v1/SearchBatchRequest";
import type { SearchBatchResponse, SearchBatchResponse__Output } from "./generated/meshsearch/api/v1/SearchBatchResponse";
import type { SearchRequest, SearchRequest__Output } from "./generated/meshsearch/api/v1/SearchRequest";
import type { SearchResponse, SearchResponse__Output } from "./generated/meshsearch/api/v1/SearchResponse";
import type { StartIngestRequest, StartIngestRequest__Output } from "./generated/meshsearch/api/v1/StartIngestRequest";
import type { StartIngestResponse, StartIngestResponse__Output } from "./generated/meshsearch/api/v1/StartIngestResponse";
import type { WatchJobRequest, WatchJobRequest__Output } from "./generated/meshsearch/api/v1/WatchJobRequest";
import type { WatchJobResponse, WatchJobResponse__Output } from "./generated/meshsearch/api/v1/WatchJobResponse";

export interface RetryPolicy {
  /** Attempts per call, the first included; 1 turns retries off. */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** A server asking for a longer wait (a daily quota) is not waited for. */
  maxWaitMs: number;
}

export const DEFAULT_RETRY: RetryPolicy;

export interface ConnectOptions {
  /** "host:port", or any gRPC target ("dns:///api.internal:50051"). */
  target: string;
  /** Sent as `authorization: Bearer <key>` on every call. */
  apiKey?: string;
  /** TLS (`grpc.credentials.createSsl(ca)`); plaintext when absent. */
  credentials?: grpc.ChannelCredentials;
  /** Default deadline of unary calls, retries included (30 000). */
  timeoutMs?: number;
  retry?: Partial<RetryPolicy>;
  /** Where meshsearch/api/v1/api.proto lies (default: this repository's protos/). */
  protosDir?: string;
  /** Send `apiKey` without TLS to a target off this machine (a trusted private network only);
   * otherwise `connect` refuses, as anyone on the path could read the key. */
  allowPlaintextKey?: boolean;
}

export interface CallOptions {
  timeoutMs?: number;
  metadata?: grpc.Metadata;
}

export interface StreamOptions {
  /** No deadline unless given. */
  timeoutMs?: number;
  metadata?: grpc.Metadata;
}

/** CollectionService of meshsearch.api.v1. */
export interface CollectionService {
  CreateCollection: (request: CreateCollectionRequest, options?: CallOptions) => Promise<CreateCollectionResponse__Output>;
  GetCollection: (request: GetCollectionRequest, options?: CallOptions) => Promise<GetCollectionResponse__Output>;
  ListCollections: (request: ListCollectionsRequest, options?: CallOptions) => Promise<ListCollectionsResponse__Output>;
  DeleteCollection: (request: DeleteCollectionRequest, options?: CallOptions) => Promise<DeleteCollectionResponse__Output>;
}

/** DocumentService of meshsearch.api.v1. */
export interface DocumentService {
  IndexDocuments: (request: IndexDocumentsRequest, options?: CallOptions) => Promise<IndexDocumentsResponse__Output>;
  GetDocuments: (request: GetDocumentsRequest, options?: CallOptions) => Promise<GetDocumentsResponse__Output>;
  DeleteDocuments: (request: DeleteDocumentsRequest, options?: CallOptions) => Promise<DeleteDocumentsResponse__Output>;
  ListDocuments: (request: ListDocumentsRequest, options?: CallOptions) => Promise<ListDocumentsResponse__Output>;
}

/** SearchService of meshsearch.api.v1. */
export interface SearchService {
  Search: (request: SearchRequest, options?: CallOptions) => Promise<SearchResponse__Output>;
  SearchBatch: (request: SearchBatchRequest, options?: CallOptions) => Promise<SearchBatchResponse__Output>;
}

/** IngestService of meshsearch.api.v1. */
export interface IngestService {
  StartIngest: (options?: StreamOptions) => grpc.ClientDuplexStream<StartIngestRequest, StartIngestResponse__Output>;
  GetJob: (request: GetJobRequest, options?: CallOptions) => Promise<GetJobResponse__Output>;
  ListJobs: (request: ListJobsRequest, options?: CallOptions) => Promise<ListJobsResponse__Output>;
  CancelJob: (request: CancelJobRequest, options?: CallOptions) => Promise<CancelJobResponse__Output>;
  WatchJob: (request: WatchJobRequest, options?: StreamOptions) => grpc.ClientReadableStream<WatchJobResponse__Output>;
  EstimateIngest: (options?: StreamOptions) => grpc.ClientWritableStream<EstimateIngestRequest>;
  ListDeadLetters: (request: ListDeadLettersRequest, options?: CallOptions) => Promise<ListDeadLettersResponse__Output>;
  RedriveDeadLetters: (request: RedriveDeadLettersRequest, options?: CallOptions) => Promise<RedriveDeadLettersResponse__Output>;
}

/** KeyService of meshsearch.api.v1. */
export interface KeyService {
  CreateApiKey: (request: CreateApiKeyRequest, options?: CallOptions) => Promise<CreateApiKeyResponse__Output>;
  ListApiKeys: (request: ListApiKeysRequest, options?: CallOptions) => Promise<ListApiKeysResponse__Output>;
  RevokeApiKey: (request: RevokeApiKeyRequest, options?: CallOptions) => Promise<RevokeApiKeyResponse__Output>;
}

export interface MeshsearchClient {
  collections: CollectionService;
  documents: DocumentService;
  search: SearchService;
  ingest: IngestService;
  keys: KeyService;
  channel: grpc.Channel;
  close(): void;
}

export function connect(options: ConnectOptions): MeshsearchClient;
/** Whether every address of a gRPC target is on this machine. */
export function isLoopback(target: string): boolean;

export interface DecodedDetail {
  /** e.g. "google.rpc.RetryInfo" */
  type: string;
  value: Record<string, any>;
}

export interface ErrorDetails {
  code: number;
  message: string;
  details: DecodedDetail[];
  /** The same details by short name: RetryInfo, ErrorInfo, QuotaFailure, BadRequest, ... */
  byType: Record<string, any>;
}

export function errorDetails(error: grpc.ServiceError): ErrorDetails;
export function retryAfterMs(error: grpc.ServiceError): number | undefined;
export function retryDelayMs(
  policy: RetryPolicy,
  attemptsMade: number,
  error: grpc.ServiceError,
  idempotent: boolean,
  timeLeftMs: number,
): number | undefined;
