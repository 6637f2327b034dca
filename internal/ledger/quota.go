package ledger

import (
	"sort"

	"github.com/heapd/heapd/internal/daemon"
)

// QuotaUse is what one uid holds against one of its quotas.
type QuotaUse struct {
	UID uint32
	// Class is a heap class (daemon.ClassContiguous...), or "" for
	// everything the uid holds.
	Class string
	// Bytes and Buffers are charged now (buffers reserved for a request
	// in progress included).
	Bytes, Buffers uint64
	// Limit is the bound, from the rule that decided the uid's latest
	// allocation; protocol.Unlimited in a field means none.
	Limit daemon.Quota
}

// Quotas returns, for every uid that ever allocated through the ledger,
// its total use and its use of each heap class it used or has a quota
// for, sorted by uid and class. A uid whose buffers were all released
// stays with zero use, so a scrape sees its use drop rather than vanish.
// Safe for concurrent use; it takes the ledger's lock briefly.
func (l *Ledger) Quotas() []QuotaUse {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []QuotaUse
	for uid, a := range l.accounts {
		lim := a.lim
		if lim.Rule == "" && lim.Total == (daemon.Quota{}) {
			lim = daemon.Unlimited("")
		}
		out = append(out, QuotaUse{UID: uid, Bytes: a.held.bytes, Buffers: a.held.buffers, Limit: lim.Total})
		classes := map[string]bool{}
		for c := range a.classes {
			classes[c] = true
		}
		for c := range lim.Classes {
			classes[c] = true
		}
		for c := range classes {
			q := QuotaUse{UID: uid, Class: c, Limit: lim.Class(c)}
			if u := a.classes[c]; u != nil {
				q.Bytes, q.Buffers = u.bytes, u.buffers
			}
			out = append(out, q)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].UID != out[j].UID {
			return out[i].UID < out[j].UID
		}
		return out[i].Class < out[j].Class
	})
	return out
}
