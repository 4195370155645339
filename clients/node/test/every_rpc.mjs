// @ts-check
// The Node.js client against a live api: every unary RPC of the data path (create, index, get,
// list, search by vector, keyword and hybrid with a filter, batch, delete by filter), and the
// google.rpc details of a failed call. Prints what it saw as JSON for
// tests/e2e/test_node_client.py, which checks it.
// Usage: node every_rpc.mjs HOST:PORT
import { connect, errorDetails } from "@meshsearch/client";

const api = connect({ target: process.argv[2], timeoutMs: 60_000 });

// protobufjs bundles the well-known types (Struct, Value) with camelCase field names, even with
// keepCase: a Value is { stringValue: ... } while meshsearch's own fields keep their snake_case.
/** @param {Record<string, string>} fields */
const metadata = (fields) => ({
  fields: Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, { stringValue: v }])),
});
/** @param {string} color */
const colorIs = (color) => ({ must: [{ field: { key: "color", eq: { stringValue: color } } }] });

const name = `node_${Math.random().toString(16).slice(2, 10)}`;
/** @type {Record<string, unknown>} */
const seen = {};
seen.created = (
  await api.collections.CreateCollection({
    collection: {
      name,
      storage: "STORAGE_FLOAT16",
      hnsw: { m: 8, ef_construction: 32 },
      chunking: { chunk_tokens: 32, overlap_tokens: 8 },
    },
  })
).collection;
seen.indexed = await api.documents.IndexDocuments({
  collection: name,
  documents: [
    { id: "a", text: "Insulin resistance develops in obese mice.", metadata: metadata({ color: "red" }) },
    { id: "b", text: "Tumour suppressor genes restrain cell division.", metadata: metadata({ color: "blue" }) },
    { id: "c", text: "Migratory birds navigate by the magnetic field.", metadata: metadata({ color: "red" }) },
  ],
});
seen.got = await api.documents.GetDocuments({ collection: name, ids: ["a", "zzz"] });
seen.page = await api.documents.ListDocuments({ collection: name, page_size: 2 });
seen.vector = await api.search.Search({ collection: name, query: "how do birds find their way?", top_k: 1 });
seen.keyword = await api.search.Search({ collection: name, query: "insulin", mode: "SEARCH_MODE_KEYWORD" });
seen.hybrid = await api.search.Search({
  collection: name,
  query: "cell division genes",
  mode: "SEARCH_MODE_HYBRID",
  filter: colorIs("blue"),
  include_text: false,
});
seen.batch = await api.search.SearchBatch({
  searches: [
    { collection: name, query: "birds" },
    { collection: name, query: "mice", mode: "SEARCH_MODE_KEYWORD" },
  ],
});
seen.collections = await api.collections.ListCollections({ page_size: 1 });
seen.deleted = await api.documents.DeleteDocuments({ collection: name, filter: colorIs("red") });
seen.described = (await api.collections.GetCollection({ name })).collection;
try {
  await api.search.Search({ collection: name, query: "x", top_k: 100000 });
  seen.error = "no error";
} catch (error) {
  const failed = /** @type {import("@grpc/grpc-js").ServiceError} */ (error);
  const { byType, ...decoded } = errorDetails(failed);
  seen.error = { ...decoded, message: failed.details };
}
await api.collections.DeleteCollection({ name });
api.close();
console.log(JSON.stringify(seen));
