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
