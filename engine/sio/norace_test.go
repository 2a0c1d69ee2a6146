//go:build !race

package sio

const raceEnabled = false
