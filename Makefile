# Tidings — `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PG_DIR ?= $(CURDIR)/.data/postgres
PG_PORT ?= 55432

.PHONY: help deps build run test test-browser test-deploy test-sanitize fuzz-api fuzz bench soak fmt clean db-start db-stop

help: ## Show every target with its description
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## Install missing system packages (libpq-dev, PostgreSQL 15) with apt-get
	@scripts/install-deps.sh

build: deps ## Build the tidings binary (debug)
	swift build

run: build ## Start the gateway on 127.0.0.1:8080 and print tokens, curl and psql examples
	@scripts/run-dev.sh

test: deps ## Run every test suite, the API description checks and fuzzing, the headless-Chromium suite (starts and removes a throwaway PostgreSQL)
	@scripts/test.sh

test-browser: build ## Only the real-browser suite (Chromium + Selenium); screenshots in .build/browser-tests/
	@scripts/browser-tests.sh

test-deploy: build ## Only the proxy suite: nginx (deploy/nginx.conf, TLS, HTTP/2) before two instances
	@scripts/deploy-tests.sh

test-sanitize: deps ## The Swift suites under ThreadSanitizer, then AddressSanitizer (.build-tsan, .build-asan; slow)
	@scripts/test-sanitize.sh

fuzz-api: build ## Lint openapi/tidings.yaml and fuzz a live gateway with schemathesis (SCHEMATHESIS_SECONDS, default 60)
	@scripts/api-tests.sh

fuzz: deps ## Fuzz the parsers with libFuzzer + AddressSanitizer in .build-fuzz (FUZZ_SECONDS per target, default 60)
	@scripts/fuzz.sh

bench: deps ## Benchmarks: micro-benchmarks with thresholds, load scenarios vs a C floor; report in Benchmarks/results/
	@scripts/bench.sh $(BENCH_ARGS)

soak: deps ## Soak a spawned gateway (SOAK_SECONDS, default 600; SOAK_MODE=postgres): memory, fds, every event once
	@scripts/soak.sh

fmt: ## Format Sources and Tests with swift format
	swift format --in-place --recursive Sources Tests Package.swift

db-start: deps ## Start the private development PostgreSQL in .data/postgres
	@scripts/pg-cluster.sh start $(PG_DIR) $(PG_PORT)

db-stop: ## Stop the private development PostgreSQL
	@scripts/pg-cluster.sh stop $(PG_DIR)

clean: db-stop ## Remove build output and local data
	rm -rf .build .build-tsan .build-asan .data
