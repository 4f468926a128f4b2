#!/usr/bin/env bash
# Runs the whole test suite against a real ZooKeeper and Apache Kafka (KRaft),
# installing and starting them first (deploy/stack.sh).
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

say "dev stack (ZooKeeper + Apache Kafka)"
"$REPO_ROOT/deploy/stack.sh" up
eval "$("$REPO_ROOT/deploy/stack.sh" env)"
build
say "tests"
cd "$REPO_ROOT"
cargo test --release --workspace -- --test-threads="${NW_TEST_THREADS:-4}"
say "all tests passed"
