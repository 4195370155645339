// What every Node.js client check shares: the public contract loaded from protos/ at run time
// (@grpc/proto-loader, no generated code), and the decoding of google.rpc error details.
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const protos = path.resolve(here, "../../../protos");
const googleProtos = path.resolve(path.dirname(require.resolve("google-proto-files/google/rpc/status.proto")), "../..");

const options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
export const api = grpc.loadPackageDefinition(
  protoLoader.loadSync("meshsearch/api/v1/api.proto", { ...options, includeDirs: [protos] }),
).meshsearch.api.v1;

const protobuf = require("protobufjs");
const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, target) => path.join(googleProtos, target);
rpcRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });

function decode(typeName, bytes) {
  const type = rpcRoot.lookupType(typeName);
  return type.toObject(type.decode(bytes), { longs: String, enums: String, defaults: true });
}

/** The standard details of a failed call, decoded from its grpc-status-details-bin trailer. */
export function errorDetails(error) {
  const [raw] = error.metadata.get("grpc-status-details-bin");
  const status = decode("google.rpc.Status", raw);
  return {
    code: status.code,
    details: status.details.map((any) => {
      const type = any.type_url.split("/").pop();
      return { type, value: decode(type, any.value) };
    }),
  };
}
