#!/usr/bin/env bash
# Regenerates Python code for proto/ into gen/ (or into $1), importable as photos.v1.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/gen}"
python="${PYTHON:-$root/.venv/bin/python}"
rm -rf "$out/photos"
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I"$root/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  $(cd "$root/proto" && find photos -name '*.proto' | sort)
touch "$out/photos/__init__.py" "$out/photos/v1/__init__.py"
