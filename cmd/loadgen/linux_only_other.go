//go:build !linux

package main

// loadgen drives its clients from epoll and Linux socket options, like the
// server it measures. On any other system the build stops here, with the
// name below as its message.
var _ = loadgen_runs_on_linux_only_it_uses_epoll

func main() {}
