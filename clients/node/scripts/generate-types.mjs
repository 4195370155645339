// Writes TypeScript declarations of every message and service of meshsearch.api.v1 (and the
// google.rpc details) into src/generated, with @grpc/proto-loader's own generator, using the
// same loader options as src/index.mjs. The output is not committed: `npm run check` (part of
// `make test`) regenerates it from protos/ before type-checking, so it cannot drift.
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const googleProtos = path.resolve(path.dirname(require.resolve("google-proto-files/google/rpc/status.proto")), "../..");
const generator = path.join(root, "node_modules", ".bin", "proto-loader-gen-types");

execFileSync(
  generator,
  [
    "--keepCase", "--longs=String", "--enums=String", "--defaults", "--oneofs", "--grpcLib=@grpc/grpc-js",
    `--outDir=${path.join(root, "src", "generated")}`,
    "--includeDirs", path.resolve(root, "../../protos"), googleProtos,
    "--", "meshsearch/api/v1/api.proto", "google/rpc/error_details.proto", "google/rpc/status.proto",
  ],
  { stdio: ["ignore", "ignore", "inherit"] },
);
