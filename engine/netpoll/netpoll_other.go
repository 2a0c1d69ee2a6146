//go:build !linux

package netpoll

// The sidecar runs on Linux only: its connections live on an epoll loop
// (this package), with raw Linux socket calls around it. On any other
// system the build stops here, with the name below as its message, rather
// than with a list of missing unix symbols.
var _ = sidecar_runs_on_linux_only_its_engine_is_an_epoll_loop
