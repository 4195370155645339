// A Node.js client of the public api built from protos/ alone (no generated code from this
// repository): it calls every RPC of meshsearch.api.v1 and decodes the google.rpc error
// details of a failed call, then prints what it saw as JSON for tests/e2e/test_node_client.py.
// Usage: node client.mjs HOST:PORT
import * as grpc from "@grpc/grpc-js";

import { api, errorDetails } from "./contract.mjs";

const target = process.argv[2];
const clients = {
  collections: new api.CollectionService(target, grpc.credentials.createInsecure()),
  documents: new api.DocumentService(target, grpc.credentials.createInsecure()),
  search: new api.SearchService(target, grpc.credentials.createInsecure()),
};

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 60_000);
    clients[client][method](request, { deadline }, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

// protobufjs bundles the well-known types (Struct, Value) with camelCase field names, even with
// keepCase: a Value is { stringValue: ... } while meshsearch's own fields keep their snake_case.
const metadata = (fields) => ({ fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, { stringValue: v }])) });
const colorIs = (color) => ({ must: [{ field: { key: "color", eq: { stringValue: color } } }] });

const name = `node_${Math.random().toString(16).slice(2, 10)}`;
const seen = {};
seen.created = (
  await call("collections", "CreateCollection", {
    collection: { name, storage: "STORAGE_FLOAT16", hnsw: { m: 8, ef_construction: 32 }, chunking: { chunk_tokens: 32, overlap_tokens: 8 } },
  })
).collection;
seen.indexed = await call("documents", "IndexDocuments", {
  collection: name,
  documents: [
    { id: "a", text: "Insulin resistance develops in obese mice.", metadata: metadata({ color: "red" }) },
    { id: "b", text: "Tumour suppressor genes restrain cell division.", metadata: metadata({ color: "blue" }) },
    { id: "c", text: "Migratory birds navigate by the magnetic field.", metadata: metadata({ color: "red" }) },
  ],
});
seen.got = await call("documents", "GetDocuments", { collection: name, ids: ["a", "zzz"] });
seen.page = await call("documents", "ListDocuments", { collection: name, page_size: 2 });
seen.vector = await call("search", "Search", { collection: name, query: "how do birds find their way?", top_k: 1 });
seen.keyword = await call("search", "Search", { collection: name, query: "insulin", mode: "SEARCH_MODE_KEYWORD" });
seen.hybrid = await call("search", "Search", {
  collection: name, query: "cell division genes", mode: "SEARCH_MODE_HYBRID", filter: colorIs("blue"), include_text: false,
});
seen.batch = await call("search", "SearchBatch", {
  searches: [{ collection: name, query: "birds" }, { collection: name, query: "mice", mode: "SEARCH_MODE_KEYWORD" }],
});
seen.collections = await call("collections", "ListCollections", { page_size: 1 });
seen.deleted = await call("documents", "DeleteDocuments", { collection: name, filter: colorIs("red") });
seen.described = (await call("collections", "GetCollection", { name })).collection;
try {
  await call("search", "Search", { collection: name, query: "x", top_k: 100000 });
  seen.error = "no error";
} catch (error) {
  seen.error = { code: error.code, message: error.details, ...errorDetails(error) };
}
await call("collections", "DeleteCollection", { name });
console.log(JSON.stringify(seen));
process.exit(0);
