# The two commands of README.md, and what they need.
.PHONY: run test e2e-deps build soak

# Run the sidecar on its embedded defaults (buntdb, in-process broker).
run:
	go run ./cmd/sidecar serve --config config.example.yaml

# Every test, with the race detector. The end-to-end tests drive real npm
# clients (ws, standardwebhooks) from testdata/e2e, installed first.
test: e2e-deps
	go vet ./...
	go test -race -count=1 ./...

e2e-deps: testdata/e2e/node_modules/.installed

testdata/e2e/node_modules/.installed: testdata/e2e/package.json testdata/e2e/package-lock.json
	cd testdata/e2e && npm ci --no-audit --no-fund
	touch $@

build:
	go build -o bin/sidecar ./cmd/sidecar

# The long soak: the real binary under a mixed load for 10 minutes, then its
# live heap back within 2 MiB of its baseline (plus the webhook ids it keeps),
# goroutines and descriptors exactly (cmd/sidecar TestSoak; `make test` runs
# its 15-second form).
soak:
	go test -count=1 -timeout 40m -run '^TestSoak$$' -v ./cmd/sidecar -soak 10m
