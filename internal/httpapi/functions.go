package httpapi

import (
	"cmp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/gearwork/gearwork/internal/broker"
)

// selectFunctions picks the functions that /metrics, the dashboard's
// overview and GET /v1/functions report, so that a server knowing many
// functions (up to --max-functions, and any peer allowed to submit or
// register can add them) cannot make every answer large: at most limit of
// them (limit < 0: all), those holding something first (live jobs, running
// jobs, workers, dead letters, a pause), then those with the most jobs
// submitted, then by name. counts adds the functions known only from their
// kept records. A function for which include (if not nil) is false is left
// out whatever the limit. It returns the names kept and how many were left
// out.
func selectFunctions(fns []broker.FunctionStats, counts []broker.JobCounts, limit int, include func(name string) bool) (map[string]bool, int) {
	type candidate struct {
		name      string
		busy      bool
		submitted uint64
	}
	at := make(map[string]int, len(fns))
	all := make([]candidate, 0, len(fns))
	for _, f := range fns {
		at[f.Name] = -1
		if include == nil || include(f.Name) {
			at[f.Name] = len(all)
			all = append(all, candidate{name: f.Name, submitted: f.Submitted,
				busy: f.Total > 0 || f.Running > 0 || f.Workers > 0 || f.DeadLetters > 0 || f.Paused})
		}
	}
	for _, jc := range counts {
		i, ok := at[jc.Function]
		if !ok && include != nil && !include(jc.Function) {
			at[jc.Function] = -1
			continue
		}
		if i < 0 {
			continue
		}
		if !ok {
			i = len(all)
			at[jc.Function] = i
			all = append(all, candidate{name: jc.Function})
		}
		if len(jc.Live) > 0 {
			all[i].busy = true
		}
	}
	if limit >= 0 && len(all) > limit {
		slices.SortFunc(all, func(a, b candidate) int {
			if a.busy != b.busy {
				if a.busy {
					return -1
				}
				return 1
			}
			return cmp.Or(cmp.Compare(b.submitted, a.submitted), cmp.Compare(a.name, b.name))
		})
		all = all[:limit]
	}
	keep := make(map[string]bool, len(all))
	for _, c := range all {
		keep[c.name] = true
	}
	return keep, len(at) - len(keep)
}

// pageFunctions picks one page of GET /v1/functions?after=: the functions
// (of fns, and those counts knows only from their kept records) whose
// names follow after, at most limit of them. It returns the names kept,
// how many were left out (before and after the page), and where the next
// page starts, "" after the last. Names are the cursor, so a page never
// repeats or skips a function that exists throughout, however the
// functions' counts change between pages. A name that is not UTF-8 (a
// Gearman peer may use any bytes) cannot come back as JSON: names are
// ordered and compared as JSON shows them (pageKey), and a page takes all
// the names that show alike, beyond limit if need be, so that the cursor
// is one JSON carries and paging never goes round in circles.
func pageFunctions(fns []broker.FunctionStats, counts []broker.JobCounts, after string, limit int) (map[string]bool, int, string) {
	type entry struct{ key, name string }
	seen := make(map[string]bool, len(fns))
	all := make([]entry, 0, len(fns))
	for _, f := range fns {
		if !seen[f.Name] {
			seen[f.Name] = true
			all = append(all, entry{pageKey(f.Name), f.Name})
		}
	}
	for _, jc := range counts {
		if !seen[jc.Function] {
			seen[jc.Function] = true
			all = append(all, entry{pageKey(jc.Function), jc.Function})
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Or(strings.Compare(a.key, b.key), strings.Compare(a.name, b.name)) })
	from, _ := slices.BinarySearchFunc(all, after, func(e entry, k string) int {
		if e.key <= k {
			return -1
		}
		return 1
	})
	end := min(len(all), from+limit)
	for end > from && end < len(all) && all[end].key == all[end-1].key {
		end++
	}
	keep := make(map[string]bool, end-from)
	for _, e := range all[from:end] {
		keep[e.name] = true
	}
	next := ""
	if end < len(all) {
		next = all[end-1].key
	}
	return keep, len(all) - len(keep), next
}

// pageKey is name as JSON shows it: each byte that is not part of UTF-8
// as U+FFFD.
func pageKey(name string) string {
	if utf8.ValidString(name) {
		return name
	}
	var sb strings.Builder
	for i := 0; i < len(name); {
		r, n := utf8.DecodeRuneInString(name[i:])
		sb.WriteRune(r) // utf8.RuneError for a byte that is not UTF-8
		i += n
	}
	return sb.String()
}
