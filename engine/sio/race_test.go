//go:build race

package sio

// raceEnabled: under the race detector sync.Pool drops items on purpose, so
// encoding/json's pooled scanner (json.Valid, in ParseSIO) allocates.
const raceEnabled = true
