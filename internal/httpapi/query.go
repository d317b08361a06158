package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// queryParams maps "METHOD /path" of each operation in openapi.json to the
// query parameters it documents. The document is the one list: a query
// parameter a route reads must be documented, and one it does not document
// is refused (checkQuery).
var queryParams = sync.OnceValue(func() map[string][]string {
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Parameters map[string]openapiParam `json:"parameters"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		panic("httpapi: openapi.json: " + err.Error()) // embedded: a build-time mistake
	}
	out := make(map[string][]string)
	for path, ops := range doc.Paths {
		for method, raw := range ops {
			var op struct {
				Parameters []openapiParam `json:"parameters"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				continue // not an operation ("parameters" shared by the path)
			}
			names := []string{}
			for _, p := range op.Parameters {
				if ref, ok := strings.CutPrefix(p.Ref, "#/components/parameters/"); ok {
					p = doc.Components.Parameters[ref]
				}
				if p.In == "query" {
					names = append(names, p.Name)
				}
			}
			slices.Sort(names)
			out[strings.ToUpper(method)+" "+path] = names
		}
	}
	return out
})

// openapiParam is a parameter object of openapi.json, or a reference to one.
type openapiParam struct {
	Ref  string `json:"$ref"`
	Name string `json:"name"`
	In   string `json:"in"`
}

// checkQuery refuses query parameters that rt does not take, so that a
// misspelt option (?priorty=high) is an error instead of being ignored.
// Only the API's routes (/v1/...) are checked.
func checkQuery(rt route, r *http.Request) error {
	if r.URL.RawQuery == "" || !strings.HasPrefix(rt.pattern, "/v1/") {
		return nil
	}
	allowed := queryParams()[rt.method+" "+rt.pattern]
	for name := range r.URL.Query() {
		if !slices.Contains(allowed, name) {
			if len(allowed) == 0 {
				return errorf(http.StatusBadRequest, "unknown-parameter", "unknown query parameter %q: %s %s takes none",
					name, rt.method, rt.pattern)
			}
			return errorf(http.StatusBadRequest, "unknown-parameter", "unknown query parameter %q: %s %s takes %s",
				name, rt.method, rt.pattern, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// queryBool reads the boolean query parameter name (parseBool): a
// parameter given without a value (?all) is true; given reports whether
// the query has it at all.
func queryBool(r *http.Request, name string) (v, given bool, err error) {
	vs, ok := r.URL.Query()[name]
	if !ok {
		return false, false, nil
	}
	if vs[0] == "" {
		return true, true, nil
	}
	v, err = parseBool(name, vs[0])
	return v, true, err
}

// boolOption reads a boolean submit option from the query (name in lower
// case, queryBool) or else the header Gearwork-<Name> (parseBool).
func boolOption(r *http.Request, name string) (bool, error) {
	q := strings.ToLower(name)
	if v, given, err := queryBool(r, q); given || err != nil {
		return v, err
	}
	return parseBool("Gearwork-"+name, r.Header.Get("Gearwork-"+name))
}
