package engine

import (
	_ "embed"
	"net/http"
)

// examplePage is the seed's test page: paste a JWT, connect, watch events.
//
//go:embed static/socket-example.html
var examplePage []byte

func serveExample(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(examplePage)
}

// favicon is an empty icon: the page has none, and a browser asking for
// one should not log a 404.
func serveFavicon(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "image/x-icon")
	w.Header().Set("Cache-Control", "public, max-age=86400")
	w.WriteHeader(http.StatusNoContent)
}
