#!/bin/sh
# Regenerates tests/vectors/ (the node-format test vectors), then checks them.
# Node ids, salts and nonces are random, so every run changes every file: commit the result
# only when a vector was added or its expectation changed. The v1 fixture is never regenerated.
set -eu
cd "$(dirname "$0")/.."
cargo test --test all -- --ignored generate_vectors
cargo test --test all -- vectors::
