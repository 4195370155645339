// A Node.js client of an api with auth on, built from protos/ alone: it is refused without a
// key, calls with one (`authorization: Bearer <key>`) and reads the remaining quota from the
// trailers, then calls until the key's rate limit answers RESOURCE_EXHAUSTED, and decodes its
// RetryInfo and QuotaFailure. Prints what it saw as JSON for tests/e2e/test_auth.py.
// Usage: node auth_client.mjs HOST:PORT API_KEY
import * as grpc from "@grpc/grpc-js";

import { api, errorDetails } from "./contract.mjs";

const [target, key] = process.argv.slice(2);
const collections = new api.CollectionService(target, grpc.credentials.createInsecure());

/** One ListCollections call: its error or response, and its trailing metadata. */
function listCollections(withKey) {
  const metadata = new grpc.Metadata();
  if (withKey) metadata.set("authorization", `Bearer ${key}`);
  return new Promise((resolve) => {
    let outcome;
    const call = collections.ListCollections({}, metadata, { deadline: new Date(Date.now() + 30_000) }, (error, response) => {
      outcome = error ? { error } : { response };
    });
    call.on("status", (status) => resolve({ ...outcome, trailers: status.metadata.getMap() }));
  });
}

const describe = (error) => ({ code: error.code, message: error.details, ...errorDetails(error) });
const seen = {};
const anonymous = await listCollections(false);
seen.without_key = describe(anonymous.error);
const first = await listCollections(true);
seen.with_key = { ok: !first.error, trailers: first.trailers };
for (let attempt = 0; attempt < 50 && !seen.limited; attempt += 1) {
  const next = await listCollections(true);
  if (next.error) seen.limited = { ...describe(next.error), trailers: next.trailers };
}
console.log(JSON.stringify(seen));
process.exit(0);
