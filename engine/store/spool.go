package store

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
)

// spoolSuffix names the directory next to the store file that holds the
// outbox bodies: <path>.outbox/.
const spoolSuffix = ".outbox"

// spoolNameLen is the length of a body file's name: its number in
// fixed-width hex, so names sort in insertion order.
const spoolNameLen = 16

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// spool keeps outbox bodies out of buntdb, which holds every value in
// memory: one file per item in dir, written once, read for each attempt,
// removed after the item's record. A file's name is a number the spool
// picks (never derived from the item's id or anything else a sender
// controls), and is only referenced once the record is committed, so a
// file is either complete and referenced or an orphan that Restore
// removes. The record keeps the body's size and CRC-32C, which catch a
// file that lost data in a power failure (sync policies other than
// "always" do not fsync bodies).
//
// With the in-memory store (dir == "") bodies stay in a map, in memory:
// the forwarder's byte cap is then all that bounds them.
type spool struct {
	dir  string // "" keeps bodies in mem
	sync bool   // fsync each file and the directory ("always")
	next atomic.Uint64
	// write creates name and writes body to it; a field so tests can fail
	// it the way a full disk does.
	write func(name string, body []byte, sync bool) error

	mu  sync.Mutex
	mem map[uint64][]byte // guarded by mu; bodies when dir == ""
}

func newSpool(storePath string, syncAlways bool) *spool {
	sp := &spool{sync: syncAlways, write: writeBodyFile}
	if storePath == Memory {
		sp.mem = map[uint64][]byte{}
	} else {
		sp.dir = storePath + spoolSuffix
	}
	return sp
}

// put stores body under a new number and returns it, with the body's
// CRC-32C. An empty body needs no file: its number is 0. On error nothing
// is left behind (or, if even the cleanup failed, an orphan that Restore
// removes).
func (sp *spool) put(body []byte) (n uint64, crc uint32, err error) {
	if len(body) == 0 {
		return 0, 0, nil
	}
	crc = crc32.Checksum(body, crcTable)
	if sp.dir == "" {
		n = sp.next.Add(1)
		b := append([]byte(nil), body...)
		sp.mu.Lock()
		sp.mem[n] = b
		sp.mu.Unlock()
		return n, crc, nil
	}
	for range 3 {
		n = sp.next.Add(1)
		err = sp.write(sp.path(n), body, sp.sync)
		if errors.Is(err, fs.ErrNotExist) { // no directory yet: Restore makes it
			if err = os.MkdirAll(sp.dir, 0o700); err == nil {
				err = sp.write(sp.path(n), body, sp.sync)
			}
		}
		// A taken name (a file Restore did not see) takes the next number.
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		if !errors.Is(err, fs.ErrExist) {
			_ = sp.remove(n) // whatever part of it was written
		}
		return 0, 0, fmt.Errorf("write outbox body: %w", err)
	}
	if sp.sync {
		if err := syncDir(sp.dir); err != nil {
			sp.remove(n)
			return 0, 0, fmt.Errorf("write outbox body: %w", err)
		}
	}
	return n, crc, nil
}

// writeBodyFile creates name (it must not exist) and writes body to it.
// A partial file is removed.
func writeBodyFile(name string, body []byte, sync bool) (err error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(name)
		}
	}()
	if _, err := f.Write(body); err != nil {
		return err
	}
	if sync {
		return f.Sync()
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// get reads body n and checks it against its size and CRC; a missing or
// altered body is ErrUnreadable.
func (sp *spool) get(n uint64, size int64, crc uint32) ([]byte, error) {
	if n == 0 {
		if size != 0 {
			return nil, fmt.Errorf("%w: no body file for %d bytes", ErrUnreadable, size)
		}
		return nil, nil
	}
	var body []byte
	if sp.dir == "" {
		sp.mu.Lock()
		b, ok := sp.mem[n]
		sp.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("%w: body %d missing", ErrUnreadable, n)
		}
		body = b // never modified: put copied it
	} else {
		var err error
		if body, err = readBodyFile(sp.path(n), size); err != nil {
			return nil, err
		}
	}
	if int64(len(body)) != size || crc32.Checksum(body, crcTable) != crc {
		return nil, fmt.Errorf("%w: body file %s does not match its record (%d bytes, crc %08x)", ErrUnreadable, spoolName(n), size, crc)
	}
	return body, nil
}

// readBodyFile reads name, expecting size bytes. A missing file, or one of
// another size, is ErrUnreadable; other errors (EIO, EMFILE) may pass.
func readBodyFile(name string, size int64) ([]byte, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrUnreadable, err)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() != size {
		return nil, fmt.Errorf("%w: body file %s holds %d bytes, want %d", ErrUnreadable, name, fi.Size(), size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(f, body); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return body, nil
}

// remove deletes body n; a body already gone is not an error.
func (sp *spool) remove(n uint64) error {
	if n == 0 {
		return nil
	}
	if sp.dir == "" {
		sp.mu.Lock()
		delete(sp.mem, n)
		sp.mu.Unlock()
		return nil
	}
	if err := os.Remove(sp.path(n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// size returns the length of body n, or ok false if it is missing.
func (sp *spool) size(n uint64) (size int64, ok bool, err error) {
	if sp.dir == "" {
		sp.mu.Lock()
		b, ok := sp.mem[n]
		sp.mu.Unlock()
		return int64(len(b)), ok, nil
	}
	fi, err := os.Lstat(sp.path(n))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	case !fi.Mode().IsRegular():
		return 0, false, nil
	}
	return fi.Size(), true, nil
}

// restore prepares the directory, removes the body files no record
// references (keep reports which), and makes new numbers start above every
// number in use.
func (sp *spool) restore(keep map[uint64]bool, log func(msg string, args ...any)) error {
	maxN := uint64(0)
	for n := range keep {
		maxN = max(maxN, n)
	}
	if sp.dir == "" {
		sp.mu.Lock()
		for n := range sp.mem {
			if !keep[n] {
				delete(sp.mem, n)
			}
		}
		sp.mu.Unlock()
		sp.next.Store(maxN)
		return nil
	}
	if err := os.MkdirAll(sp.dir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(sp.dir)
	if err != nil {
		return err
	}
	removed := 0
	for _, e := range entries {
		n, ok := parseSpoolName(e.Name())
		if !ok {
			continue // not ours: left alone
		}
		maxN = max(maxN, n)
		if keep[n] {
			continue
		}
		if err := os.Remove(filepath.Join(sp.dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove orphan outbox body: %w", err)
		}
		removed++
	}
	if removed > 0 {
		log("removed outbox body files with no record", "dir", sp.dir, "files", removed)
	}
	sp.next.Store(maxN)
	return nil
}

func (sp *spool) path(n uint64) string { return filepath.Join(sp.dir, spoolName(n)) }

// spoolName is n in 16 lowercase hex digits.
func spoolName(n uint64) string {
	const digits = "0123456789abcdef"
	var b [spoolNameLen]byte
	for i := spoolNameLen - 1; i >= 0; i-- {
		b[i] = digits[n&0xf]
		n >>= 4
	}
	return string(b[:])
}

// parseSpoolName is the inverse of spoolName; ok is false for any other
// name.
func parseSpoolName(name string) (uint64, bool) {
	if len(name) != spoolNameLen {
		return 0, false
	}
	for i := range len(name) {
		if c := name[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(name, 16, 64)
	return n, err == nil && n != 0
}
