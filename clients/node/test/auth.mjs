// @ts-check
// The Node.js client against an api with auth on: refused without a key; with one, it reads the
// remaining quota from the trailers; with retries off, it calls until the key's rate limit
// answers RESOURCE_EXHAUSTED and decodes its RetryInfo and QuotaFailure; with retries on (the
// default), the same burst completes, paced by the server's RetryInfo. Prints what it saw as
// JSON for tests/e2e/test_auth.py.
// Usage: node auth.mjs HOST:PORT API_KEY
import * as grpc from "@grpc/grpc-js";

import { connect, errorDetails } from "@meshsearch/client";

const [target, key] = process.argv.slice(2);
const anonymous = connect({ target, retry: { maxAttempts: 1 } });
const impatient = connect({ target, apiKey: key, retry: { maxAttempts: 1 } });
const patient = connect({ target, apiKey: key });

/** @param {grpc.ServiceError} error */
const describe = (error) => {
  const { byType, ...decoded } = errorDetails(error);
  return { ...decoded, code: error.code, message: error.details };
};

/** One ListCollections call through the raw stub-like interface, keeping its trailers. */
function listWithTrailers() {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  return new Promise((resolve) => {
    /** @type {{error?: grpc.ServiceError}} */
    let outcome = {};
    const client = new grpc.Client(target, grpc.credentials.createInsecure(), { channelOverride: impatient.channel });
    const call = client.makeUnaryRequest(
      "/meshsearch.api.v1.CollectionService/ListCollections",
      () => Buffer.alloc(0),
      (bytes) => bytes,
      {},
      metadata,
      { deadline: Date.now() + 30_000 },
      (error) => {
        outcome = error ? { error } : {};
      },
    );
    call.on("status", (status) => resolve({ ...outcome, trailers: status.metadata.getMap() }));
  });
}

/** @type {Record<string, any>} */
const seen = {};
try {
  await anonymous.collections.ListCollections({});
} catch (error) {
  seen.without_key = describe(/** @type {grpc.ServiceError} */ (error));
}
const first = /** @type {{error?: grpc.ServiceError, trailers: object}} */ (await listWithTrailers());
seen.with_key = { ok: !first.error, trailers: first.trailers };
for (let attempt = 0; attempt < 50 && !seen.limited; attempt += 1) {
  const next = /** @type {{error?: grpc.ServiceError, trailers: object}} */ (await listWithTrailers());
  if (next.error) seen.limited = { ...describe(next.error), trailers: next.trailers };
}
const started = Date.now();
let completed = 0;
for (let call = 0; call < 4; call += 1) {
  await patient.collections.ListCollections({});
  completed += 1;
}
seen.paced = { completed, elapsed_ms: Date.now() - started };
// A key is never sent in plaintext off this machine unless the caller says the network is trusted.
const refusesPlaintext = (/** @type {string} */ remote, /** @type {boolean} */ allow) => {
  try {
    connect({ target: remote, apiKey: key, allowPlaintextKey: allow }).close();
    return false;
  } catch {
    return true;
  }
};
seen.plaintext = {
  remote: refusesPlaintext("dns:///api.example.internal:50051", false),
  lookalike: refusesPlaintext("127.0.0.1.attacker.example:50051", false),
  remote_allowed: refusesPlaintext("dns:///api.example.internal:50051", true),
  loopback: refusesPlaintext(target, false),
};
for (const client of [anonymous, impatient, patient]) client.close();
console.log(JSON.stringify(seen));
