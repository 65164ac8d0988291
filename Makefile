# Every target is one line calling cargo or cargo xtask; see README.md.
.PHONY: run test bench build migrate-up migrate-status migrate-create db-up db-down

run: ## Local cluster when DATABASE_URL is unset, migrate up, serve on :8090.
	cargo xtask run

test: ## fmt check, clippy -D warnings, Dockerfiles linted and the Helm chart rendered and valid, OpenAPI document current and valid, the OpenAPI fuzzer, every test against real PostgreSQL.
	cargo fmt --all -- --check && cargo clippy --workspace --all-targets --locked -- -D warnings && cargo xtask deploy-check && cargo xtask openapi --check && cargo xtask fuzz && cargo xtask test

bench: ## Release builds on their own cluster under load (wrk); writes docs/benchmarks.md. Knobs: make bench ARGS="--quick".
	cargo xtask bench $(ARGS)

build: ## Release binaries: target/release/tenant-registry and tenant-registry-migrate.
	cargo build --release --locked --bin tenant-registry --bin tenant-registry-migrate

migrate-up: ## Apply pending migrations (DATABASE_URL, else the local cluster).
	DATABASE_URL="$${DATABASE_URL:-$$(cargo xtask db up)}" cargo run --quiet --bin tenant-registry-migrate -- up

migrate-status: ## Applied and pending migrations (DATABASE_URL, else the local cluster).
	DATABASE_URL="$${DATABASE_URL:-$$(cargo xtask db up)}" cargo run --quiet --bin tenant-registry-migrate -- status

migrate-create: ## New migrations/V{n}__NAME.sql, e.g. make migrate-create NAME=add_tenant_version
	cargo xtask migrate-create "$(NAME)"

db-up: ## Start the local PostgreSQL cluster and print its DATABASE_URL.
	cargo xtask db up

db-down: ## Stop the local PostgreSQL cluster (its data stays).
	cargo xtask db down
