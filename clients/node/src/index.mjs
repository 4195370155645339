// The Node.js client of meshsearch's public API. The contract is loaded from protos/ at run
// time (@grpc/proto-loader), so nothing generated is committed; src/index.d.ts gives it types.
//
// What every call gets, as in the Python client (meshsearch.client):
// - the API key as `authorization: Bearer <key>`, and a fresh `x-request-id` per logical call;
// - a default deadline for unary calls (30 s), which also bounds their retries;
// - retries: RESOURCE_EXHAUSTED carrying a google.rpc.RetryInfo (a refusal: nothing was done)
//   after the delay the server asks, for any method; UNAVAILABLE only for methods the contract
//   marks idempotent, with exponential backoff and full jitter.
// `errorDetails(error)` decodes the google.rpc details of a failed call.
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import { isIPv4 } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const DEFAULT_PROTOS = path.resolve(here, "../../../protos");
const googleProtos = path.resolve(path.dirname(require.resolve("google-proto-files/google/rpc/status.proto")), "../..");
const LOADER_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const SAFE_TO_REPEAT = new Set(["IDEMPOTENT", "NO_SIDE_EFFECTS"]);
const SERVICES = {
  collections: "CollectionService",
  documents: "DocumentService",
  search: "SearchService",
  ingest: "IngestService",
  keys: "KeyService",
};
export const DEFAULT_RETRY = { maxAttempts: 5, initialBackoffMs: 100, maxBackoffMs: 5_000, maxWaitMs: 30_000 };

const protobuf = require("protobufjs");
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, target) => path.join(googleProtos, target);
rpcRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });

/** @param {string} typeName @param {Uint8Array} bytes */
function decode(typeName, bytes) {
  const type = rpcRoot.lookupType(typeName);
  return type.toObject(type.decode(bytes), { longs: String, enums: String, defaults: true });
}

// The same keepalive as the mesh's own clients (meshsearch_common/keepalive.py): ping every
// 10 s, idle or not, and drop a connection whose ping is unanswered for 5 s, so a silent link
// is found in seconds rather than at each call's deadline. The servers accept these pings.
const CHANNEL_OPTIONS = {
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
  "grpc.keepalive_permit_without_calls": 1,
};

/** The google.rpc details of a failed call, decoded from its grpc-status-details-bin trailer. */
export function errorDetails(/** @type {grpc.ServiceError} */ error) {
  const [raw] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (!raw || typeof raw === "string") return { code: error.code, message: error.details, details: [], byType: {} };
  const status = decode("google.rpc.Status", raw);
  const details = status.details.map((/** @type {{type_url: string, value: Uint8Array}} */ any) => {
    const type = any.type_url.split("/").pop() ?? "";
    return { type, value: decode(type, any.value) };
  });
  const byType = Object.fromEntries(details.map((/** @type {{type: string}} */ d) => [d.type.replace("google.rpc.", ""), d.value]));
  return { code: status.code, message: status.message, details, byType };
}

/** Milliseconds the server asked to wait (RetryInfo), or undefined. */
export function retryAfterMs(/** @type {grpc.ServiceError} */ error) {
  const info = errorDetails(error).byType.RetryInfo;
  if (!info) return undefined;
  return Number(info.retry_delay.seconds) * 1000 + Number(info.retry_delay.nanos) / 1e6;
}

/**
 * How long to wait before attempt `attemptsMade + 1`, or undefined when the error is final.
 * @param {typeof DEFAULT_RETRY} policy @param {number} attemptsMade @param {grpc.ServiceError} error
 * @param {boolean} idempotent @param {number} timeLeftMs
 */
export function retryDelayMs(policy, attemptsMade, error, idempotent, timeLeftMs) {
  if (attemptsMade >= policy.maxAttempts) return undefined;
  const asked = retryAfterMs(error);
  let delay;
  if (error.code === grpc.status.RESOURCE_EXHAUSTED && asked !== undefined) {
    delay = asked * (1 + Math.random() * 0.2);
  } else if (error.code === grpc.status.UNAVAILABLE && idempotent) {
    const backoff = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (attemptsMade - 1));
    delay = Math.max(asked ?? 0, Math.random() * backoff);
  } else {
    return undefined;
  }
  return delay > policy.maxWaitMs || delay >= timeLeftMs ? undefined : delay;
}

const sleep = (/** @type {number} */ ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Whether every address of a gRPC target is on this machine (nothing sent crosses a network). */
export function isLoopback(/** @type {string} */ target) {
  if (target.startsWith("unix:") || target.startsWith("unix-abstract:")) return true;
  let address = target.startsWith("dns:") ? target.split("///").pop() ?? "" : target;
  address = address.replace(/^ipv[46]:/, "");
  return address.split(",").every((part) => loopbackHost(part.trim()));
}

/** The whole host, not a prefix of it: "127.0.0.1.example.net" is someone else's machine. */
function loopbackHost(/** @type {string} */ hostPort) {
  let host = hostPort;
  if (hostPort.startsWith("[")) host = hostPort.slice(1, hostPort.indexOf("]"));
  else if (hostPort.split(":").length === 2) host = hostPort.split(":")[0];
  if (host === "localhost" || host === "::1") return true;
  return isIPv4(host) && host.startsWith("127.");
}

/**
 * A client of the api at `target`. See src/index.d.ts for the options and the methods.
 * @param {{target: string, apiKey?: string, credentials?: grpc.ChannelCredentials,
 *   timeoutMs?: number, retry?: Partial<typeof DEFAULT_RETRY>, protosDir?: string, allowPlaintextKey?: boolean}} options
 */
export function connect({
  target, apiKey = "", credentials, timeoutMs = 30_000, retry = {}, protosDir = DEFAULT_PROTOS, allowPlaintextKey = false,
}) {
  if (apiKey && !credentials && !allowPlaintextKey && !isLoopback(target)) {
    throw new Error(
      `refusing to send an API key without TLS to ${target}: anyone on the path could read it. ` +
        "Pass credentials (grpc.credentials.createSsl) or, on a network you trust, allowPlaintextKey: true",
    );
  }
  const definition = protoLoader.loadSync("meshsearch/api/v1/api.proto", { ...LOADER_OPTIONS, includeDirs: [protosDir] });
  const loaded = /** @type {any} */ (grpc.loadPackageDefinition(definition)).meshsearch.api.v1;
  const policy = { ...DEFAULT_RETRY, ...retry };
  const channelCredentials = credentials ?? grpc.credentials.createInsecure();
  // One channel for every service: later stubs reuse the first one's.
  const first = new loaded.CollectionService(target, channelCredentials, CHANNEL_OPTIONS);
  const channelOverride = { channelOverride: first.getChannel() };

  const metadataFor = (/** @type {grpc.Metadata | undefined} */ given) => {
    const metadata = given ? given.clone() : new grpc.Metadata();
    if (apiKey && metadata.get("authorization").length === 0) metadata.set("authorization", `Bearer ${apiKey}`);
    if (metadata.get("x-request-id").length === 0) metadata.set("x-request-id", randomUUID().replaceAll("-", ""));
    return metadata;
  };

  /** @type {Record<string, any>} */
  const client = { close: () => first.close(), channel: first.getChannel() };
  for (const [field, serviceName] of Object.entries(SERVICES)) {
    const stub = serviceName === "CollectionService" ? first : new loaded[serviceName](target, channelCredentials, channelOverride);
    /** @type {Record<string, any>} */
    const methods = {};
    for (const [name, method] of Object.entries(definition[`meshsearch.api.v1.${serviceName}`])) {
      const rpc = /** @type {protoLoader.MethodDefinition<object, object>} */ (method);
      if (rpc.requestStream || rpc.responseStream) {
        // Streams: the key and a request id; no default deadline (a WatchJob may last hours).
        methods[name] = (/** @type {any[]} */ ...args) => {
          const request = rpc.requestStream ? undefined : args.shift();
          const [options = {}] = args;
          const callOptions = options.timeoutMs ? { deadline: Date.now() + options.timeoutMs } : {};
          const metadata = metadataFor(options.metadata);
          return rpc.requestStream ? stub[name](metadata, callOptions) : stub[name](request, metadata, callOptions);
        };
        continue;
      }
      const idempotent = SAFE_TO_REPEAT.has(/** @type {any} */ (rpc.options).idempotency_level);
      methods[name] = async (/** @type {object} */ request, /** @type {any} */ options = {}) => {
        const deadline = Date.now() + (options.timeoutMs ?? timeoutMs);
        const metadata = metadataFor(options.metadata);
        for (let attempts = 1; ; attempts += 1) {
          try {
            return await new Promise((resolve, reject) =>
              stub[name](request, metadata, { deadline }, (/** @type {any} */ error, /** @type {any} */ response) =>
                error ? reject(error) : resolve(response),
              ),
            );
          } catch (error) {
            const delay = retryDelayMs(policy, attempts, /** @type {grpc.ServiceError} */ (error), idempotent, deadline - Date.now());
            if (delay === undefined) throw error;
            await sleep(delay);
          }
        }
      };
    }
    client[field] = methods;
  }
  return client;
}
