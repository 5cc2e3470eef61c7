#!/usr/bin/env bash
# Regenerate the Python gRPC stubs in shared/proto/ from the .proto files (run from anywhere).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
"$PYTHON" -m grpc_tools.protoc \
  --proto_path=. \
  --python_out=. \
  --pyi_out=. \
  --grpc_python_out=. \
  shared/proto/citadel.proto

# Generated code is not ours to lint or type-check; mark each file so mypy skips it wherever it is imported.
for generated in shared/proto/*_pb2.py shared/proto/*_pb2.pyi shared/proto/*_pb2_grpc.py; do
  if ! head -n 1 "$generated" | grep -q "mypy: ignore-errors"; then
    printf '# mypy: ignore-errors\n%s\n' "$(cat "$generated")" > "$generated"
  fi
done
