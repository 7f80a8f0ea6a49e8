package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/oklog/ulid/v2"
)

// Checkpoint records how far a consumer has got, so that it resumes there
// after a restart or a crash: the id of the last item it has finished
// with, saved after the work the item caused (at-least-once: an item
// handled and not yet saved is handled again after a crash).
type Checkpoint interface {
	// Load returns the saved id, or "" when nothing was ever saved.
	Load(ctx context.Context) (id string, err error)
	// Save records id, durably when it returns nil.
	Save(ctx context.Context, id string) error
}

// Resume returns where a consumer with checkpoint cp starts: after the id
// cp holds, or otherwise when it holds none.
func Resume(ctx context.Context, cp Checkpoint, otherwise From) (From, error) {
	id, err := cp.Load(ctx)
	if err != nil {
		return From{}, err
	}
	if id == "" {
		return otherwise, nil
	}
	from := After(id)
	if from.err != nil {
		return From{}, fmt.Errorf("checkpoint: %w", from.err)
	}
	return from, nil
}

// FileCheckpoint is a Checkpoint kept in one file, holding the id and a
// newline. Save writes the id to FILE.tmp, fsyncs it, renames it over
// FILE and fsyncs the directory, so that after a crash at any point FILE
// holds the previous id or the new one, never a mix or nothing; a missing
// FILE means nothing was saved. One consumer, in one process, owns a
// checkpoint file: Saves are serialized within a FileCheckpoint, not
// across processes.
type FileCheckpoint struct {
	path string
	mu   sync.Mutex
}

// NewFileCheckpoint returns the checkpoint kept in the file at path. The
// file's directory must exist; Load fails when it does not, so that a
// consumer learns it at its start rather than at its first Save, after
// it has handled items it then cannot record.
func NewFileCheckpoint(path string) *FileCheckpoint {
	return &FileCheckpoint{path: path}
}

// Path is the checkpoint's file.
func (f *FileCheckpoint) Path() string { return f.path }

// Load returns the id the file holds, or "" when there is no file in an
// existing directory. A file that holds anything but an id is an error,
// not a fresh start: a consumer that silently started over would handle
// everything again. So is a directory that is missing, or not one.
func (f *FileCheckpoint) Load(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		dir := filepath.Dir(f.path)
		fi, err := os.Stat(dir)
		if err != nil {
			return "", fmt.Errorf("checkpoint %s: its directory: %w", f.path, err)
		}
		if !fi.IsDir() {
			return "", fmt.Errorf("checkpoint %s: %s is not a directory", f.path, dir)
		}
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	id, err := ulid.ParseStrict(string(bytes.TrimSuffix(b, []byte("\n"))))
	if err != nil {
		return "", fmt.Errorf("checkpoint %s holds %.40q, not an event id: %w", f.path, b, err)
	}
	return id.String(), nil
}

// Save records id durably; see FileCheckpoint.
func (f *FileCheckpoint) Save(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	u, err := ulid.ParseStrict(id)
	if err != nil {
		return fmt.Errorf("checkpoint: %w: %q is not an event id", ErrInvalid, id)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.write([]byte(u.String() + "\n")); err != nil {
		return fmt.Errorf("checkpoint %s: %w", f.path, err)
	}
	return nil
}

func (f *FileCheckpoint) write(b []byte) error {
	// A fixed temporary name: what a crash leaves behind is overwritten by
	// the next Save rather than piling up.
	tmp := f.path + ".tmp"
	file, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = file.Write(b)
	if err == nil {
		err = file.Sync()
	}
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	// The rename is durable once the directory is.
	return syncDir(filepath.Dir(f.path))
}
