package auth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/sidecar/sidecar/internal/filewatch"
)

// keyFiles holds the keys of the public key files: one key per file, whose
// kid is the file's name without its extension ("keys/2024-06.pem" is kid
// "2024-06"). Reload reads them all again and swaps in a new set; a file
// that cannot be read or parsed keeps its previous key, and says so.
type keyFiles struct {
	paths   []string
	kids    []string // fileKID of each path
	allowed []string // the allowed asymmetric algorithms
	log     *slog.Logger
	set     atomic.Pointer[KeySet]

	// newWatcher and pollInterval are filewatch's defaults when zero;
	// tests replace them.
	newWatcher   func() (*fsnotify.Watcher, error)
	pollInterval time.Duration

	mu         sync.Mutex // serializes reloads; guards the fields below
	keys       []Key      // the last good key of each file, as paths
	lastErr    error      // of the last reload; nil if it succeeded
	lastReload time.Time  // of the last reload
	loaded     filewatch.Stamp
}

// fileKID is the kid of a key file: its base name without the extension.
func fileKID(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// newKeyFiles reads every file. Any error stops here: at start-up a
// missing or wrong key is a configuration error, not something to keep
// running without.
func newKeyFiles(paths, allowed []string, log *slog.Logger) (*keyFiles, error) {
	f := &keyFiles{paths: paths, allowed: allowed, log: log}
	seen := map[string]string{}
	for _, p := range paths {
		kid := fileKID(p)
		if other, dup := seen[kid]; dup {
			return nil, fmt.Errorf("auth: public key files %s and %s have the same kid %q (a key file's kid is its name without the extension)", other, p, kid)
		}
		seen[kid] = p
		f.kids = append(f.kids, kid)
	}
	f.loaded = filewatch.StampOf(paths...)
	for i := range paths {
		k, err := f.read(i)
		if err != nil {
			return nil, err
		}
		f.keys = append(f.keys, k)
	}
	f.lastReload = time.Now()
	f.set.Store(newKeySet(f.keys, allowed))
	return f, nil
}

// read reads key file i and checks that an allowed algorithm can use it.
func (f *keyFiles) read(i int) (Key, error) {
	key, err := readPublicKey(f.paths[i])
	if err != nil {
		return Key{}, err
	}
	k := Key{KID: f.kids[i], Key: key}
	if len(usableBy(k, f.allowed)) == 0 {
		if len(f.paths) > 1 {
			return Key{}, fmt.Errorf("auth: public key %s: no allowed algorithm (%v) can use its %s key", f.paths[i], f.allowed, keyKind(key))
		}
		alg := f.allowed[0] // one file: the message it always had
		fam, curve, _ := algorithmFamily(alg)
		return Key{}, keyFits(alg, fam, curve, key)
	}
	return k, nil
}

// current is the set in use; nil for a nil f.
func (f *keyFiles) current() *KeySet {
	if f == nil {
		return nil
	}
	return f.set.Load()
}

// Reload reads every key file again and swaps in the new set. A file that
// fails keeps its previous key: the error, naming the file, is logged and
// returned (joined, one per file).
func (f *keyFiles) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loaded = filewatch.StampOf(f.paths...) // before reading: a write during the read is a change
	keys := make([]Key, len(f.keys))
	var errs []error
	changed := false
	for i := range f.paths {
		k, err := f.read(i)
		if err != nil {
			keys[i] = f.keys[i]
			f.log.Error("public key file reload failed; previous key kept", "file", f.paths[i], "kid", f.kids[i], "err", err)
			errs = append(errs, err)
			continue
		}
		if !sameKey(k, f.keys[i]) {
			changed = true
		}
		keys[i] = k
	}
	f.keys = keys
	f.lastErr = errors.Join(errs...)
	f.lastReload = time.Now()
	if changed {
		f.set.Store(newKeySet(keys, f.allowed))
	}
	f.log.Info("public key files reloaded", "files", len(keys), "kids", describeKIDs(f.kids), "changed", changed)
	return f.lastErr
}

func sameKey(a, b Key) bool {
	ea, ok := a.Key.(interface{ Equal(crypto.PublicKey) bool })
	return ok && a.KID == b.KID && a.Alg == b.Alg && ea.Equal(b.Key)
}

func (f *keyFiles) loadedStamp() filewatch.Stamp {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loaded
}

// run reloads on each value from hup and when a key file changes, until
// ctx is done.
func (f *keyFiles) run(ctx context.Context, hup <-chan os.Signal) error {
	w := filewatch.Watcher{
		Paths:        f.paths,
		What:         "public key file",
		Log:          f.log,
		NewWatcher:   f.newWatcher,
		PollInterval: f.pollInterval,
	}
	return w.Run(ctx, true, hup, f.loadedStamp, func() { _ = f.Reload() }) // Reload logs its errors
}

// status is the key files' part of the readiness detail.
func (f *keyFiles) status() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := fmt.Sprintf("%d public key files (kids %s), read %s", len(f.paths), describeKIDs(f.kids), f.lastReload.UTC().Format(time.RFC3339))
	if f.lastErr != nil {
		s += "; last reload failed, previous keys kept: " + strings.ReplaceAll(f.lastErr.Error(), "\n", "; ")
	}
	return s
}
