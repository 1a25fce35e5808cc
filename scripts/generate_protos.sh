#!/usr/bin/env bash
# Regenerates the Python code for protos/ into the client package (or into $1 for drift checks).
# Generated files are committed and never edited by hand: change the .proto and run `make proto`.
set -euo pipefail
cd "$(dirname "$0")/.."
package_root="${1:-client}"
out="$package_root/llmfeedback/proto"
rm -rf "$out"
mkdir -p "$out"
python -m grpc_tools.protoc \
  --proto_path=protos \
  --python_out="$out" \
  --mypy_out="$out" \
  --grpc_python_out="$out" \
  --mypy_grpc_out="$out" \
  --plugin=protoc-gen-mypy="$(command -v protoc-gen-mypy)" \
  --plugin=protoc-gen-mypy_grpc="$(command -v protoc-gen-mypy_grpc)" \
  protos/feedback/v1/*.proto
# feedback_v1.binpb keeps the comments (the *_pb2 modules drop them) so server reflection can show
# grpcurl and other outside clients the documented contract, error details included. The vendored
# google/ files get no Python here: googleapis-common-protos already registers them.
python -m grpc_tools.protoc \
  --proto_path=protos \
  --descriptor_set_out="$out/feedback_v1.binpb" --include_imports --include_source_info \
  protos/feedback/v1/*.proto protos/google/rpc/error_details.proto
# protoc writes imports as `from feedback.v1 import ...`; they must live under our package so they
# cannot collide with a `feedback` module of the service that installs the client.
find "$out" -name '*.py*' -exec sed -i -E 's/^from feedback\.v1 import/from llmfeedback.proto.feedback.v1 import/; s/^import feedback\.v1\./import llmfeedback.proto.feedback.v1./' {} +
# Message-only files get empty *_pb2_grpc modules; only files that declare a service keep theirs.
for grpc_module in "$out"/feedback/v1/*_pb2_grpc.py; do
  grep -q 'Stub' "$grpc_module" || rm -f "$grpc_module" "${grpc_module}i"
done
for dir in "$out" "$out/feedback" "$out/feedback/v1"; do
  echo '"""Generated from protos/ by scripts/generate_protos.sh; do not edit."""' > "$dir/__init__.py"
done
