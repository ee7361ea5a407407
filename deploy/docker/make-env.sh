#!/bin/sh
# Writes deploy/.env for deploy/compose.yaml from deploy/docker/env.example, with a random value
# for every required secret. Refuses to overwrite an existing file.
#   deploy/docker/make-env.sh [OUTPUT]      (default: deploy/.env beside compose.yaml)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../.env}
if [ -e "$out" ]; then
    echo "make-env: $out exists; remove it first to write a new one" >&2
    exit 1
fi
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
umask 077
sed -e "s/^PHOTOSTORE_SERVICE_API_KEY=$/PHOTOSTORE_SERVICE_API_KEY=$(hex 24)/" \
    -e "s/^PHOTOSTORE_TOKEN_SECRET=$/PHOTOSTORE_TOKEN_SECRET=$(hex 32)/" \
    -e "s/^PHOTOSTORE_BLOBS__S3_ACCESS_KEY=$/PHOTOSTORE_BLOBS__S3_ACCESS_KEY=photostore-$(hex 6)/" \
    -e "s/^PHOTOSTORE_BLOBS__S3_SECRET_KEY=$/PHOTOSTORE_BLOBS__S3_SECRET_KEY=$(hex 24)/" \
    -e "s/^MONGO_ROOT_PASSWORD=$/MONGO_ROOT_PASSWORD=$(hex 24)/" \
    "$here/env.example" > "$out"
echo "make-env: wrote $out"
