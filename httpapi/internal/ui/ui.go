// Package ui is the viewer page served at /ui/: plain HTML, CSS and
// JavaScript modules embedded in the binary, with no build step and nothing
// loaded from another host.
//
// The files hold no data, so they are served without a token; the page's
// own API calls carry one (see static/api.js). Every answer carries a
// Content-Security-Policy that allows only this origin's files and no
// inline script, so that even a mistake in the page could not run markup
// taken from an event: the page sets event data with textContent only.
package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var files embed.FS

// policy is the Content-Security-Policy of every answer of Handler: this
// origin's files only (scripts, styles, images, fetches), no inline script
// or style attribute, no plugins, no framing, no form posts elsewhere.
const policy = "default-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page's files for requests whose path has had its
// prefix stripped (http.StripPrefix("/ui/", ...)): "" is the page. Each answer
// carries policy, an ETag from the file's content, and Cache-Control:
// no-cache, so that a browser revalidates after an upgrade.
func Handler() http.Handler {
	static, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embed pattern names the directory: it exists
	}
	etags := make(map[string]string)
	err = fs.WalkDir(static, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		etags[path] = `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
		if path == "index.html" {
			etags[""] = etags[path]
		}
		return nil
	})
	if err != nil {
		panic(err) // an embedded file system reads without errors
	}
	files := http.FileServerFS(static)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", policy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if tag, ok := etags[strings.TrimPrefix(r.URL.Path, "/")]; ok {
			h.Set("ETag", tag) // http.FileServer answers If-None-Match with it
		}
		files.ServeHTTP(w, r)
	})
}
