package httpapi

import (
	"embed"
	"mime"
	"net/http"
	"path"
)

// openapiJSON is the OpenAPI 3.1 document of this API, written by hand; a
// test checks that it lists exactly the router's routes.
//
//go:embed openapi.json
var openapiJSON []byte

// staticFiles are the dashboard: plain HTML, CSS and JavaScript with no
// build step and nothing loaded from elsewhere.
//
//go:embed static
var staticFiles embed.FS

// handleOpenAPI serves GET /openapi.json.
func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(openapiJSON)
	return nil
}

// handleDashboard serves GET / (the dashboard page).
func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request) error {
	return serveStatic(w, "index.html")
}

// handleAsset serves GET /assets/{file}.
func (s *Server) handleAsset(w http.ResponseWriter, r *http.Request) error {
	return serveStatic(w, r.PathValue("file"))
}

func serveStatic(w http.ResponseWriter, name string) error {
	data, err := staticFiles.ReadFile("static/" + path.Clean("/" + name)[1:])
	if err != nil {
		return errorf(http.StatusNotFound, "no-route", "no dashboard file %q", name)
	}
	ct := mime.TypeByExtension(path.Ext(name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", "no-cache")
	// frame-ancestors (and X-Frame-Options for older browsers): a page of
	// another site must not show the dashboard in a frame, where it could
	// have the user click its buttons (clickjacking); the dashboard's own
	// requests are same-origin, so the cross-origin check would not stop
	// them.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(data)
	return nil
}
