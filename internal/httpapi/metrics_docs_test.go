package httpapi

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// Every gearwork_* name the docs mention is a metric the server exports
// (a histogram's _bucket, _sum or _count series included) or a PostgreSQL
// object the migrations create: a metric renamed or documented under a
// name it never had fails here, not in an operator's alert rule.
func TestDocsNameRealMetrics(t *testing.T) {
	t.Parallel()
	tb := setup(t)

	known := map[string]bool{}
	descs := make(chan *prometheus.Desc)
	go func() {
		defer close(descs)
		tb.srv.metrics.requests.Describe(descs)
		(&brokerCollector{s: tb.srv}).Describe(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		m := fqName.FindStringSubmatch(d.String())
		require.NotNil(t, m, "no name in %s", d)
		known[m[1]] = true
	}
	// The scrape too: a metric registered some other way counts as well.
	text, _ := scrape(t, tb)
	for _, line := range strings.Split(text, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			known[strings.Fields(name)[0]] = true
		}
	}
	require.True(t, known["gearwork_queue_depth"], "the metrics have no gearwork_queue_depth: %v", known)

	migrations, err := os.ReadFile(filepath.Join("..", "store", "postgres", "migrate.go"))
	require.NoError(t, err)
	word := regexp.MustCompile(`\bgearwork_[a-z0-9_]+`)
	tables := map[string]bool{}
	for _, w := range word.FindAllString(string(migrations), -1) {
		tables[w] = true
	}
	require.True(t, tables["gearwork_jobs"], "no gearwork_jobs table in the migrations")

	docs, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	require.NoError(t, err)
	require.NotEmpty(t, docs)
	docs = append(docs, filepath.Join("..", "..", "README.md"))
	var unknown []string
	checked := 0
	for _, doc := range docs {
		body, err := os.ReadFile(doc)
		require.NoError(t, err)
		for i, line := range strings.Split(string(body), "\n") {
			for _, w := range word.FindAllString(line, -1) {
				checked++
				base := w
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(w, suffix); ok && known[b] {
						base = b
					}
				}
				if !known[base] && !tables[w] {
					unknown = append(unknown, filepath.Base(doc)+":"+strconv.Itoa(i+1)+": "+w)
				}
			}
		}
	}
	require.NotZero(t, checked, "the docs name no gearwork_* metric")
	sort.Strings(unknown)
	require.Empty(t, unknown, "names in the docs that are neither a metric nor a PostgreSQL object")
}
