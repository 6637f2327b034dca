package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"time"

	toml "github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// DefaultPath is where heapd reads its policy unless told otherwise.
const DefaultPath = "/etc/heapd/heapd.toml"

// Defaults of the settings a policy file may leave out.
const (
	DefaultReleaseInterval = time.Second
	DefaultSessionCache    = time.Second
	DefaultLogindTimeout   = 2 * time.Second
)

// MaxRules bounds the rules of one policy.
const MaxRules = 1024

// ErrSyntax is wrapped by every error Parse returns for a bad file.
var ErrSyntax = errors.New("policy: invalid policy file")

// Lookup resolves user and group names. Parse uses it once per name.
type Lookup interface {
	// User returns the uid of name; false when there is no such user.
	User(name string) (uint32, bool)
	// Group returns the gid of name; false when there is no such group.
	Group(name string) (uint32, bool)
}

// SystemLookup resolves names through the system's passwd and group
// databases (package os/user; without cgo, /etc/passwd and /etc/group).
type SystemLookup struct{}

// User implements Lookup.
func (SystemLookup) User(name string) (uint32, bool) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(id), err == nil
}

// Group implements Lookup.
func (SystemLookup) Group(name string) (uint32, bool) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, false
	}
	id, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(id), err == nil
}

// MapLookup is a Lookup from fixed tables (tests, fuzzing).
type MapLookup struct {
	Users, Groups map[string]uint32
}

// User implements Lookup.
func (m MapLookup) User(name string) (uint32, bool) { id, ok := m.Users[name]; return id, ok }

// Group implements Lookup.
func (m MapLookup) Group(name string) (uint32, bool) { id, ok := m.Groups[name]; return id, ok }

// ParseOptions tune Parse; nil means defaults.
type ParseOptions struct {
	// Source names the file in messages; default "heapd.toml".
	Source string
	// Lookup resolves names; nil means SystemLookup.
	Lookup Lookup
}

// The file's schema. Pointers tell "absent" from zero.
type fileDoc struct {
	Ledger *fileLedger `toml:"ledger"`
	Logind *fileLogind `toml:"logind"`
	Rule   []fileRule  `toml:"rule"`
}

type fileLedger struct {
	ReleaseInterval *Duration `toml:"release_interval"`
}

type fileLogind struct {
	Bus     *string   `toml:"bus"`
	Cache   *Duration `toml:"cache"`
	Timeout *Duration `toml:"timeout"`
}

type fileRule struct {
	Name       *string         `toml:"name"`
	UID        []uint32        `toml:"uid"`
	User       []string        `toml:"user"`
	GID        []uint32        `toml:"gid"`
	Group      []string        `toml:"group"`
	DaemonUser *bool           `toml:"daemon_user"`
	Session    *sessionValue   `toml:"session"`
	Heaps      *[]patternValue `toml:"heaps"`
	MaxAlloc   *Size           `toml:"max_alloc"`
	Rate       *Rate           `toml:"rate"`
	Quota      *fileQuota      `toml:"quota"`
}

type fileQuota struct {
	Bytes      *Size           `toml:"bytes"`
	Buffers    *uint64         `toml:"buffers"`
	Contiguous *fileClassQuota `toml:"contiguous"`
	System     *fileClassQuota `toml:"system"`
	Emulated   *fileClassQuota `toml:"emulated"`
}

type fileClassQuota struct {
	Bytes   *Size   `toml:"bytes"`
	Buffers *uint64 `toml:"buffers"`
}

// Parse reads a policy from data. Errors wrap ErrSyntax and start with
// "SOURCE:LINE:COLUMN:" (or "SOURCE:LINE:" for a whole rule); every
// unknown key is reported. Names that do not resolve are not errors (a
// group such as render may not exist on every system): they are listed
// in Policy.Warnings and match nobody.
func Parse(data []byte, opts *ParseOptions) (*Policy, error) {
	var o ParseOptions
	if opts != nil {
		o = *opts
	}
	if o.Source == "" {
		o.Source = "heapd.toml"
	}
	if o.Lookup == nil {
		o.Lookup = SystemLookup{}
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return nil, fmt.Errorf("%w: %s: contains a NUL byte: not a text file", ErrSyntax, o.Source)
	}
	var doc fileDoc
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, decodeError(o.Source, err)
	}
	lines := ruleLines(data)
	p := &Policy{
		Source:          o.Source,
		ReleaseInterval: DefaultReleaseInterval,
		SessionCache:    DefaultSessionCache,
		LogindTimeout:   DefaultLogindTimeout,
	}
	if doc.Ledger != nil && doc.Ledger.ReleaseInterval != nil {
		p.ReleaseInterval = time.Duration(*doc.Ledger.ReleaseInterval)
		if p.ReleaseInterval < 10*time.Millisecond || p.ReleaseInterval > time.Minute {
			return nil, fmt.Errorf("%w: %s: [ledger] release_interval %s: must be from 10ms to 1m", ErrSyntax, o.Source, p.ReleaseInterval)
		}
	}
	if l := doc.Logind; l != nil {
		if l.Bus != nil {
			if *l.Bus == "" || strings.ContainsAny(*l.Bus, "\n\x00") {
				return nil, fmt.Errorf("%w: %s: [logind] bus: want a D-Bus address such as \"unix:path=/run/dbus/system_bus_socket\"", ErrSyntax, o.Source)
			}
			p.LogindBus = *l.Bus
		}
		if l.Cache != nil {
			p.SessionCache = time.Duration(*l.Cache)
		}
		if l.Timeout != nil {
			p.LogindTimeout = time.Duration(*l.Timeout)
		}
	}
	if len(doc.Rule) > MaxRules {
		return nil, fmt.Errorf("%w: %s: %d rules: at most %d", ErrSyntax, o.Source, len(doc.Rule), MaxRules)
	}
	names := map[string]int{}
	for i, fr := range doc.Rule {
		r := Rule{Index: i + 1}
		if i < len(lines) {
			r.Line = lines[i]
		}
		where := fmt.Sprintf("%s:%d: rule %d", o.Source, r.Line, r.Index)
		if fr.Name == nil || *fr.Name == "" {
			return nil, fmt.Errorf("%w: %s: has no name: give every rule a name = \"...\" (denials quote it)", ErrSyntax, where)
		}
		r.Name = *fr.Name
		if len(r.Name) > 64 || strings.ContainsAny(r.Name, "\"\n\r\t\x00") {
			return nil, fmt.Errorf("%w: %s: name %q: at most 64 characters, no quotes or control characters", ErrSyntax, where, r.Name)
		}
		if prev, ok := names[r.Name]; ok {
			return nil, fmt.Errorf("%w: %s: name %q is also rule %d's: names must be unique", ErrSyntax, where, r.Name, prev)
		}
		names[r.Name] = r.Index
		where = fmt.Sprintf("%s:%d: rule %d %q", o.Source, r.Line, r.Index, r.Name)

		r.UIDs = append(r.UIDs, fr.UID...)
		r.GIDs = append(r.GIDs, fr.GID...)
		for _, n := range fr.User {
			if n == "" {
				return nil, fmt.Errorf("%w: %s: user: empty name", ErrSyntax, where)
			}
			id, ok := o.Lookup.User(n)
			r.Users = append(r.Users, NamedID{Name: n, ID: id, Known: ok})
			if !ok {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s: user %q does not exist here: it matches nobody", where, n))
			}
		}
		for _, n := range fr.Group {
			if n == "" {
				return nil, fmt.Errorf("%w: %s: group: empty name", ErrSyntax, where)
			}
			id, ok := o.Lookup.Group(n)
			r.Groups = append(r.Groups, NamedID{Name: n, ID: id, Known: ok})
			if !ok {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s: group %q does not exist here: it matches nobody", where, n))
			}
		}
		if fr.DaemonUser != nil {
			if !*fr.DaemonUser {
				return nil, fmt.Errorf("%w: %s: daemon_user = false means nothing: leave it out", ErrSyntax, where)
			}
			r.DaemonUser = true
		}
		if fr.Session != nil {
			r.Session = fr.Session.m
		}
		if fr.Heaps == nil {
			return nil, fmt.Errorf("%w: %s: has no heaps: list the heaps it grants (heaps = [\"system\"]), or write heaps = [] to deny what it matches", ErrSyntax, where)
		}
		r.Heaps = []Pattern{}
		for _, h := range *fr.Heaps {
			r.Heaps = append(r.Heaps, h.p)
		}
		r.MaxAlloc = Unlimited
		if fr.MaxAlloc != nil {
			if *fr.MaxAlloc == 0 {
				return nil, fmt.Errorf("%w: %s: max_alloc = 0 allows nothing: use heaps = [] to deny", ErrSyntax, where)
			}
			r.MaxAlloc = uint64(*fr.MaxAlloc)
		}
		if fr.Rate != nil {
			rt := *fr.Rate
			r.Rate = &rt
		}
		r.Quota = QuotaSet{Total: NoLimit}
		if q := fr.Quota; q != nil {
			r.Quota.Total = quotaOf(q.Bytes, q.Buffers)
			for _, c := range []struct {
				name string
				q    *fileClassQuota
			}{{ClassContiguous, q.Contiguous}, {ClassSystem, q.System}, {ClassEmulated, q.Emulated}} {
				if c.q == nil {
					continue
				}
				if r.Quota.Classes == nil {
					r.Quota.Classes = map[string]Limit{}
				}
				r.Quota.Classes[c.name] = quotaOf(c.q.Bytes, c.q.Buffers)
			}
		}
		p.Rules = append(p.Rules, r)
	}
	return p, nil
}

func quotaOf(bytes *Size, buffers *uint64) Limit {
	l := NoLimit
	if bytes != nil {
		l.Bytes = uint64(*bytes)
	}
	if buffers != nil {
		l.Buffers = *buffers
	}
	return l
}

// decodeError renders a go-toml error as "source:line:col: message".
func decodeError(source string, err error) error {
	var sme *toml.StrictMissingError
	if errors.As(err, &sme) {
		var msgs []string
		for _, e := range sme.Errors {
			row, col := e.Position()
			msgs = append(msgs, fmt.Sprintf("%s:%d:%d: unknown key %s", source, row, col, strings.Join(e.Key(), ".")))
		}
		return fmt.Errorf("%w: %s", ErrSyntax, strings.Join(msgs, "\n"))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if k := de.Key(); len(k) > 0 {
			msg = strings.Join(k, ".") + ": " + msg
		}
		return fmt.Errorf("%w: %s:%d:%d: %s", ErrSyntax, source, row, col, msg)
	}
	return fmt.Errorf("%w: %s: %v", ErrSyntax, source, err)
}

// ruleLines returns the line of each [[rule]] header, in order. The
// document has already decoded, so it parses.
func ruleLines(data []byte) []int {
	var lines []int
	var p unstable.Parser
	p.Reset(data)
	for p.NextExpression() {
		e := p.Expression()
		if e.Kind != unstable.ArrayTable {
			continue
		}
		it := e.Key()
		var parts []string
		line := 0
		for it.Next() {
			n := it.Node()
			if line == 0 {
				line = p.Shape(n.Raw).Start.Line
			}
			parts = append(parts, string(n.Data))
		}
		if len(parts) == 1 && parts[0] == "rule" {
			lines = append(lines, line)
		}
	}
	return lines
}
