package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/logind"
	"github.com/heapd/heapd/internal/units"
	"github.com/heapd/heapd/protocol"
)

// SessionSource answers whether a uid has an active local session;
// *logind.Client implements it. An error wrapping logind.ErrUnavailable
// means there is no logind: session rules then simply do not match.
type SessionSource interface {
	Presence(ctx context.Context, uid uint32) (logind.Presence, error)
}

// Config configures an Authorizer. The zero value works: no logind, the
// daemon's uid 0, decisions discarded.
type Config struct {
	// Logger receives one line per decision: refusals at Info, grants
	// at Debug. nil discards.
	Logger *slog.Logger
	// Sessions answers session rules; nil means there is no logind.
	Sessions SessionSource
	// DaemonUID is heapd's own uid (rule key daemon_user).
	DaemonUID uint32
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
}

// Authorizer applies a Policy to allocation requests. It implements
// daemon.Authorizer. Create it with NewAuthorizer; it is safe for
// concurrent use, and SetPolicy swaps the policy atomically (SIGHUP).
type Authorizer struct {
	cfg Config
	log *slog.Logger
	pol atomic.Pointer[Policy]

	mu      sync.Mutex
	buckets map[bucketKey]*bucket

	smu      sync.Mutex
	sessions map[uint32]sessionAnswer
	warned   bool
}

var _ daemon.Authorizer = (*Authorizer)(nil)

type bucketKey struct {
	uid  uint32
	rule string
}

type bucket struct {
	tokens float64
	at     time.Time
}

type sessionAnswer struct {
	p   logind.Presence
	err error
	at  time.Time
}

// NewAuthorizer returns an Authorizer for p (not nil). cfg may be nil.
func NewAuthorizer(p *Policy, cfg *Config) *Authorizer {
	var c Config
	if cfg != nil {
		c = *cfg
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	a := &Authorizer{cfg: c, log: c.Logger, buckets: map[bucketKey]*bucket{}, sessions: map[uint32]sessionAnswer{}}
	a.pol.Store(p)
	return a
}

// Policy returns the policy in force.
func (a *Authorizer) Policy() *Policy { return a.pol.Load() }

// SetPolicy puts p (not nil) in force for the decisions that start after
// it returns. Rate-limit buckets and cached logind answers start afresh.
func (a *Authorizer) SetPolicy(p *Policy) {
	a.mu.Lock()
	a.buckets = map[bucketKey]*bucket{}
	a.mu.Unlock()
	a.smu.Lock()
	a.sessions = map[uint32]sessionAnswer{}
	a.smu.Unlock()
	a.pol.Store(p)
}

// decide finds the rule for peer; nil and the reasons each rule did not
// match when none does.
func (a *Authorizer) decide(ctx context.Context, p *Policy, peer *daemon.Identity) (*Rule, []string) {
	var misses []string
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.MatchesWho(peer, a.cfg.DaemonUID) {
			misses = append(misses, fmt.Sprintf("rule %d %q needs %s", r.Index, r.Name, r.WhoString()))
			continue
		}
		if r.Session != "" {
			ok, why := a.session(ctx, p, peer.UID, r.Session)
			if !ok {
				misses = append(misses, fmt.Sprintf("rule %d %q needs %s, and %s", r.Index, r.Name, r.WhoString(), why))
				continue
			}
		}
		return r, nil
	}
	return nil, misses
}

// session reports whether uid has the session mode wants, and if not why.
func (a *Authorizer) session(ctx context.Context, p *Policy, uid uint32, want SessionMode) (bool, string) {
	if a.cfg.Sessions == nil {
		return false, "heapd does not ask logind here"
	}
	now := a.cfg.Now()
	a.smu.Lock()
	ans, ok := a.sessions[uid]
	a.smu.Unlock()
	if !ok || now.Sub(ans.at) >= p.SessionCache || now.Before(ans.at) {
		pr, err := a.cfg.Sessions.Presence(ctx, uid)
		ans = sessionAnswer{p: pr, err: err, at: now}
		a.smu.Lock()
		if len(a.sessions) > 4096 {
			a.sessions = map[uint32]sessionAnswer{}
		}
		a.sessions[uid] = ans
		first := !a.warned && err != nil
		if first {
			a.warned = true
		}
		a.smu.Unlock()
		switch {
		case err != nil && errors.Is(err, logind.ErrUnavailable) && first:
			a.log.Info("logind is not available: session rules match nobody", "err", err)
		case err != nil && first:
			a.log.Warn("asking logind failed: session rules match nobody until it answers", "err", err)
		case err != nil:
			a.log.Debug("logind did not answer", "uid", uid, "err", err)
		}
	}
	switch {
	case ans.err != nil && errors.Is(ans.err, logind.ErrUnavailable):
		return false, "logind is not available here"
	case ans.err != nil:
		return false, "logind did not answer (" + ans.err.Error() + ")"
	case want == SessionSeat && ans.p.Seat:
		return true, ""
	case want == SessionSeat && ans.p.Active:
		return false, fmt.Sprintf("uid %d's active local session has no seat", uid)
	case want == SessionActive && ans.p.Active:
		return true, ""
	}
	return false, fmt.Sprintf("logind reports no active local session for uid %d", uid)
}

// AuthorizeAlloc implements daemon.Authorizer.
func (a *Authorizer) AuthorizeAlloc(ctx context.Context, peer *daemon.Identity, req daemon.AllocRequest) (daemon.Limits, error) {
	p := a.pol.Load()
	r, misses := a.decide(ctx, p, peer)
	heapName := req.Heap.Name
	logArgs := func(extra ...any) []any {
		args := []any{"uid", peer.UID, "gid", peer.GID, "groups", peer.Groups, "pid", peer.PID, "comm", peer.Comm,
			"heap", heapName, "size", req.Size, "count", req.Count}
		return append(args, extra...)
	}
	deny := func(code protocol.Code, rule string, msg string) (daemon.Limits, error) {
		a.log.Info("allocation denied", logArgs("rule", rule, "code", code, "reason", msg)...)
		return daemon.Limits{}, &protocol.Error{Code: code, Message: msg}
	}
	if r == nil {
		return deny(protocol.CodeDenied, "none", fmt.Sprintf("%s matches no rule of %s, so it is denied: %s; a rule that matches it (or joining what a rule needs) would allow it",
			who(peer), p.Source, strings.Join(misses, "; ")))
	}
	ref := r.Ref(p.Source)
	if len(r.Heaps) == 0 {
		return deny(protocol.CodeDenied, ref, fmt.Sprintf("%s is denied by %s, which matches it (%s) and grants no heap; a rule before it that grants heaps would allow it",
			who(peer), ref, r.WhoString()))
	}
	if heapName != "" && !r.Grants(heapName) {
		return deny(protocol.CodeDenied, ref, fmt.Sprintf("%s may not allocate from %s: %s grants it %s only; allocate from one of those, or add %s to that rule's heaps",
			who(peer), heapName, ref, patterns(r.Heaps), heapName))
	}
	if req.Size > 0 && uint64(req.Size) > r.MaxAlloc {
		return deny(protocol.CodeQuota, ref, fmt.Sprintf("a buffer of %s is larger than max_alloc %s of %s for %s; allocate smaller buffers, or raise that rule's max_alloc",
			units.FormatSize(req.Size), Size(r.MaxAlloc), ref, who(peer)))
	}
	if heapName != "" && r.Rate != nil {
		if wait, ok := a.take(peer.UID, r, max(req.Count, 1)); !ok {
			if wait < 0 {
				return deny(protocol.CodeRateLimited, ref, fmt.Sprintf("a batch of %d buffers is more than rate %s of %s allows at once; allocate in smaller batches",
					req.Count, r.Rate, ref))
			}
			return deny(protocol.CodeRateLimited, ref, fmt.Sprintf("%s allocates faster than rate %s of %s allows; retry in %s",
				who(peer), r.Rate, ref, wait.Round(time.Millisecond)))
		}
	}
	if heapName != "" {
		a.log.Debug("allocation allowed", logArgs("rule", ref)...)
	}
	return r.Limits(p.Source), nil
}

// take takes n tokens from uid's bucket for r; when it cannot, how long
// until it could (negative: never, n exceeds the burst).
func (a *Authorizer) take(uid uint32, r *Rule, n int) (time.Duration, bool) {
	if n > r.Rate.N {
		return -1, false
	}
	now := a.cfg.Now()
	rate := float64(r.Rate.N) / float64(r.Rate.Per) // tokens per nanosecond
	a.mu.Lock()
	defer a.mu.Unlock()
	k := bucketKey{uid, r.Name}
	b := a.buckets[k]
	if b == nil {
		if len(a.buckets) >= 4096 {
			a.pruneLocked(now, rate)
		}
		b = &bucket{tokens: float64(r.Rate.N), at: now}
		a.buckets[k] = b
	}
	if el := now.Sub(b.at); el > 0 {
		b.tokens = math.Min(float64(r.Rate.N), b.tokens+float64(el)*rate)
		b.at = now
	}
	if b.tokens >= float64(n)-1e-9 { // float rounding must not cost a token
		b.tokens = max(b.tokens, float64(n))
		b.tokens -= float64(n)
		return 0, true
	}
	return time.Duration((float64(n) - b.tokens) / rate), false
}

// pruneLocked forgets buckets idle long enough to be full again (a full
// bucket is the same as none).
func (a *Authorizer) pruneLocked(now time.Time, _ float64) {
	for k, b := range a.buckets {
		if now.Sub(b.at) > 24*time.Hour {
			delete(a.buckets, k)
		}
	}
	if len(a.buckets) >= 4096 {
		// Still full: forget the lot; at worst a uid gets one extra burst.
		a.buckets = map[bucketKey]*bucket{}
	}
}

// Describe implements daemon.Authorizer.
func (a *Authorizer) Describe(ctx context.Context, peer *daemon.Identity) (string, daemon.Limits) {
	p := a.pol.Load()
	r, misses := a.decide(ctx, p, peer)
	if r == nil {
		return fmt.Sprintf("no rule of %s matches you: denied (%s)", p.Source, strings.Join(misses, "; ")),
			daemon.Limits{Rule: "no rule", MaxAlloc: 0}
	}
	ref := r.Ref(p.Source)
	if len(r.Heaps) == 0 {
		return fmt.Sprintf("%s: denied (it grants no heap)", ref), daemon.Limits{Rule: ref}
	}
	s := fmt.Sprintf("%s: heaps %s; max_alloc %s", ref, patterns(r.Heaps), limitString(r.MaxAlloc, true))
	if r.Rate != nil {
		s += "; rate " + r.Rate.String()
	}
	return s, r.Limits(p.Source)
}

func who(peer *daemon.Identity) string {
	if peer.Comm != "" {
		return fmt.Sprintf("uid %d (%s)", peer.UID, peer.Comm)
	}
	return fmt.Sprintf("uid %d", peer.UID)
}

func patterns(ps []Pattern) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}
