package store

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/tidwall/buntdb"
)

// errCorrupt marks a file buntdb cannot parse (as opposed to one it cannot
// read, which is reported as is).
var errCorrupt = errors.New("store: corrupt file")

// Open opens or creates the buntdb file at path (Memory keeps nothing).
// The outbox keeps its bodies in the directory <path>.outbox, made when
// first needed.
//
// A file with garbage in the middle is moved aside to <path>.corrupt-<unix>
// (with a "-N" suffix if that name is taken, and its outbox directory with
// it, as <path>.corrupt-<unix>.outbox) and replaced by an empty store;
// this is logged at Error, and Open succeeds, so a corrupt file cannot cause
// a crash loop. The node's stored state is derived or retried data (dedup
// keys, outbox, presence), so starting empty is preferable to not starting.
// A file that cannot be read at all (permissions, I/O error) is an error.
func Open(path string, opt Options) (*Store, error) {
	policy, err := syncPolicy(opt.Sync)
	if err != nil {
		return nil, err
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store")

	db, err := openDB(path)
	if errors.Is(err, errCorrupt) {
		aside, mvErr := moveAside(path, time.Now())
		if mvErr != nil {
			return nil, fmt.Errorf("open store %s: %w; moving it aside: %w", path, err, mvErr)
		}
		log.Error("store file corrupt: moved aside, starting empty",
			"path", path, "moved_to", aside, "err", err)
		// The outbox bodies belong to the records in the damaged file:
		// keep them with it rather than let Restore remove them as orphans.
		if mvErr := os.Rename(path+spoolSuffix, aside+spoolSuffix); mvErr != nil && !errors.Is(mvErr, fs.ErrNotExist) {
			log.Error("moving the outbox bodies aside", "path", path+spoolSuffix, "err", mvErr)
		}
		db, err = openDB(path)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	var cfg buntdb.Config
	if err := db.ReadConfig(&cfg); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	cfg.SyncPolicy = policy
	if err := db.SetConfig(cfg); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &Store{db: db, path: path, log: log, commit: (*buntdb.Tx).Commit}
	s.outbox = &Outbox{s: s, sp: newSpool(path, policy == buntdb.Always)}
	return s, nil
}

// openDB is buntdb.Open with its parse failures marked errCorrupt. Besides
// ErrInvalid, buntdb's loader returns a *strconv.NumError for a bad expiry
// and panics (index out of range) on an empty command name; both mean the
// file is damaged. After such a panic buntdb's file handle stays open: one
// descriptor, once per start-up with a damaged file.
func openDB(path string) (db *buntdb.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("%w: buntdb panicked while loading: %v", errCorrupt, r)
		}
	}()
	db, err = buntdb.Open(path)
	var numErr *strconv.NumError
	if errors.Is(err, buntdb.ErrInvalid) || errors.As(err, &numErr) {
		return nil, fmt.Errorf("%w: %w", errCorrupt, err)
	}
	return db, err
}

// moveAside renames path to path.corrupt-<unix>, never over an existing file.
func moveAside(path string, now time.Time) (string, error) {
	base := path + ".corrupt-" + strconv.FormatInt(now.Unix(), 10)
	aside := base
	for i := 1; ; i++ {
		_, err := os.Lstat(aside)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return "", err
		}
		aside = base + "-" + strconv.Itoa(i)
	}
	return aside, os.Rename(path, aside)
}

func syncPolicy(s string) (buntdb.SyncPolicy, error) {
	switch s {
	case "always":
		return buntdb.Always, nil
	case "everysecond", "":
		return buntdb.EverySecond, nil
	case "never":
		return buntdb.Never, nil
	}
	return 0, fmt.Errorf("store: unknown sync policy %q (want always, everysecond or never)", s)
}
