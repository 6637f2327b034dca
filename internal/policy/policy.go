package policy

import (
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/protocol"
)

// Unlimited in a limit means no limit (protocol.Unlimited).
const Unlimited = protocol.Unlimited

// Heap classes a quota can name (see daemon.HeapClass).
const (
	ClassContiguous = daemon.ClassContiguous
	ClassSystem     = daemon.ClassSystem
	ClassEmulated   = daemon.ClassEmulated
)

// Limit is a quota: bytes and buffers; Unlimited in a field for none.
type Limit = daemon.Quota

// NoLimit is a Limit without bounds.
var NoLimit = daemon.NoQuota

// QuotaSet is a rule's quota: in total and per heap class.
type QuotaSet struct {
	Total Limit
	// Classes holds the classes with a quota of their own; nil for none.
	Classes map[string]Limit
}

// NamedID is a user or group name from the file and what it resolved to.
type NamedID struct {
	Name  string
	ID    uint32
	Known bool // false: no such name here; it matches nobody
}

// Rule is one [[rule]] of a policy.
type Rule struct {
	// Index is the rule's position, from 1; Line is where its [[rule]]
	// header is.
	Index, Line int
	Name        string

	// Who it matches: a peer matches when it has any of these uids, is
	// any of these users, has any of these gids or groups (primary or
	// supplementary), or is the daemon's own user. A rule without any of
	// them matches every peer.
	UIDs       []uint32
	Users      []NamedID
	GIDs       []uint32
	Groups     []NamedID
	DaemonUser bool
	// Session, when set, must also hold: the peer's uid has an active
	// local logind session (SessionActive), on a seat (SessionSeat).
	Session SessionMode

	// What it grants: heaps whose logical name matches a pattern (none:
	// a deny rule), each buffer at most MaxAlloc bytes, at most Rate
	// buffers per period (nil: no limit), within Quota per uid.
	Heaps    []Pattern
	MaxAlloc uint64
	Rate     *Rate
	Quota    QuotaSet
}

// HasWho reports whether r names whom it matches (else it matches every
// peer, subject to Session).
func (r *Rule) HasWho() bool {
	return len(r.UIDs) > 0 || len(r.Users) > 0 || len(r.GIDs) > 0 || len(r.Groups) > 0 || r.DaemonUser
}

// MatchesWho reports whether peer is among the rule's who (uid, user, gid,
// group, daemon user); true when the rule names nobody in particular.
func (r *Rule) MatchesWho(peer *daemon.Identity, daemonUID uint32) bool {
	if !r.HasWho() {
		return true
	}
	if slices.Contains(r.UIDs, peer.UID) || r.DaemonUser && peer.UID == daemonUID {
		return true
	}
	for _, u := range r.Users {
		if u.Known && u.ID == peer.UID {
			return true
		}
	}
	for _, g := range r.GIDs {
		if peer.InGroup(g) {
			return true
		}
	}
	for _, g := range r.Groups {
		if g.Known && peer.InGroup(g.ID) {
			return true
		}
	}
	return false
}

// Grants reports whether the rule grants the heap called name.
func (r *Rule) Grants(name string) bool {
	for _, p := range r.Heaps {
		if p.Match(name) {
			return true
		}
	}
	return false
}

// Ref names the rule in messages: `rule 3 "graphics" (heapd.toml line 20)`.
func (r *Rule) Ref(source string) string {
	return fmt.Sprintf("rule %d %q (%s line %d)", r.Index, r.Name, source, r.Line)
}

// WhoString says whom the rule matches, in words.
func (r *Rule) WhoString() string {
	var alts []string
	if len(r.UIDs) > 0 {
		alts = append(alts, "uid "+joinIDs(r.UIDs, " or "))
	}
	if len(r.Users) > 0 {
		alts = append(alts, "user "+joinNamed(r.Users, " or "))
	}
	if len(r.GIDs) > 0 {
		alts = append(alts, "gid "+joinIDs(r.GIDs, " or "))
	}
	if len(r.Groups) > 0 {
		alts = append(alts, "group "+joinNamed(r.Groups, " or "))
	}
	if r.DaemonUser {
		alts = append(alts, "heapd's own user")
	}
	who := strings.Join(alts, ", or ")
	if who == "" {
		who = "everyone"
	}
	switch r.Session {
	case SessionActive:
		who += " with an active local session"
	case SessionSeat:
		who += " with an active local session on a seat"
	}
	return who
}

// Limits returns the rule's limits as the daemon enforces them.
func (r *Rule) Limits(source string) daemon.Limits {
	l := daemon.Limits{Rule: r.Ref(source), Total: r.Quota.Total, MaxAlloc: r.MaxAlloc}
	if len(r.Quota.Classes) > 0 {
		l.Classes = make(map[string]daemon.Quota, len(r.Quota.Classes))
		for k, v := range r.Quota.Classes {
			l.Classes[k] = v
		}
	}
	return l
}

func joinIDs(ids []uint32, sep string) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, sep)
}

func joinNamed(ns []NamedID, sep string) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = n.Name
	}
	return strings.Join(s, sep)
}

// Policy is a parsed policy file. It is immutable once parsed: share it
// freely.
type Policy struct {
	// Source is the file it came from (messages cite it).
	Source string
	// Rules, in order: the first that matches decides.
	Rules []Rule
	// ReleaseInterval is how often the ledger checks whether handed-out
	// buffers were freed ([ledger] release_interval).
	ReleaseInterval time.Duration
	// LogindBus is the bus logind is asked on; "" means the system bus
	// ($DBUS_SYSTEM_BUS_ADDRESS or the standard socket).
	LogindBus string
	// SessionCache is how long a logind answer is reused for a uid;
	// LogindTimeout bounds one question.
	SessionCache, LogindTimeout time.Duration
	// Warnings are things that are not errors but probably not meant
	// (names that do not resolve here).
	Warnings []string
}

// UsesSessions reports whether any rule asks logind.
func (p *Policy) UsesSessions() bool {
	for i := range p.Rules {
		if p.Rules[i].Session != "" {
			return true
		}
	}
	return false
}

// Format writes the effective policy, as heapd --check-config prints it:
// every setting with its defaults filled in, every rule with names
// resolved and limits spelled out, then the warnings.
func (p *Policy) Format(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "policy %s: %d rule(s); the first rule that matches decides; no match: denied\n", p.Source, len(p.Rules))
	fmt.Fprintf(&b, "ledger: release_interval %s (freed buffers stop counting within this)\n", p.ReleaseInterval)
	bus := p.LogindBus
	if bus == "" {
		bus = "system bus ($DBUS_SYSTEM_BUS_ADDRESS or unix:path=/run/dbus/system_bus_socket)"
	}
	if p.UsesSessions() {
		fmt.Fprintf(&b, "logind: %s, answers reused for %s, timeout %s\n", bus, p.SessionCache, p.LogindTimeout)
	} else {
		fmt.Fprintf(&b, "logind: not asked (no rule has a session key)\n")
	}
	for i := range p.Rules {
		r := &p.Rules[i]
		fmt.Fprintf(&b, "\nrule %d %q (line %d)\n", r.Index, r.Name, r.Line)
		who := r.WhoString()
		var res []string
		for _, u := range r.Users {
			res = append(res, namedString("user", u, "uid"))
		}
		for _, g := range r.Groups {
			res = append(res, namedString("group", g, "gid"))
		}
		if len(res) > 0 {
			who += " [" + strings.Join(res, ", ") + "]"
		}
		fmt.Fprintf(&b, "  matches:   %s\n", who)
		if len(r.Heaps) == 0 {
			fmt.Fprintf(&b, "  grants:    nothing (denies what it matches)\n")
			continue
		}
		hs := make([]string, len(r.Heaps))
		for i, h := range r.Heaps {
			hs[i] = string(h)
		}
		fmt.Fprintf(&b, "  grants:    heaps %s\n", strings.Join(hs, ", "))
		fmt.Fprintf(&b, "  max_alloc: %s\n", limitString(r.MaxAlloc, true))
		if r.Rate != nil {
			fmt.Fprintf(&b, "  rate:      %s buffers (bursts up to %d)\n", r.Rate, r.Rate.N)
		} else {
			fmt.Fprintf(&b, "  rate:      unlimited\n")
		}
		fmt.Fprintf(&b, "  quota:     %s per uid in total\n", quotaString(r.Quota.Total))
		classes := make([]string, 0, len(r.Quota.Classes))
		for c := range r.Quota.Classes {
			classes = append(classes, c)
		}
		sort.Strings(classes)
		for _, c := range classes {
			fmt.Fprintf(&b, "             %s of %s memory\n", quotaString(r.Quota.Classes[c]), c)
		}
	}
	if len(p.Warnings) > 0 {
		fmt.Fprintf(&b, "\nwarnings:\n")
		for _, w := range p.Warnings {
			fmt.Fprintf(&b, "  %s\n", w)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func namedString(kind string, n NamedID, idName string) string {
	if !n.Known {
		return fmt.Sprintf("%s %s: unknown here", kind, n.Name)
	}
	return fmt.Sprintf("%s %s = %s %d", kind, n.Name, idName, n.ID)
}

func limitString(v uint64, size bool) string {
	if v == Unlimited {
		return "unlimited"
	}
	if size {
		return Size(v).String()
	}
	return fmt.Sprint(v)
}

func quotaString(q Limit) string {
	if q == NoLimit {
		return "unlimited"
	}
	return fmt.Sprintf("%s bytes, %s buffers", limitString(q.Bytes, true), limitString(q.Buffers, false))
}
