package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/internal/daemon"
	"github.com/heapd/heapd/internal/logind"
	"github.com/heapd/heapd/internal/testutil"
	"github.com/heapd/heapd/protocol"
)

func TestMain(m *testing.M) { testutil.Main(m) }

var names = MapLookup{
	Users:  map[string]uint32{"root": 0, "alice": 1000, "bob": 1001},
	Groups: map[string]uint32{"video": 44, "render": 105, "wheel": 10},
}

func parse(t *testing.T, text string) *Policy {
	t.Helper()
	p, err := Parse([]byte(text), &ParseOptions{Source: "test.toml", Lookup: names})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, text, want string
	}{
		{"unknown top key", "colour = 1\n", "test.toml:1:1: unknown key colour"},
		{"unknown rule key", "[[rule]]\nname = \"a\"\nheaps = []\nquota_bytes = 5\n", "test.toml:4:1: unknown key rule.quota_bytes"},
		{"unknown quota key", "[[rule]]\nname = \"a\"\nheaps = []\n[rule.quota]\nbites = 5\n", "test.toml:5:1: unknown key rule.quota.bites"},
		{"unknown class", "[[rule]]\nname = \"a\"\nheaps = []\n[rule.quota.cma]\nbytes = 5\n", "unknown key rule.quota.cma"},
		{"bad size", "[[rule]]\nname = \"a\"\nheaps = []\nmax_alloc = \"12XB\"\n", "test.toml:4:"},
		{"decimal size", "[[rule]]\nname = \"a\"\nheaps = []\nmax_alloc = \"12MB\"\n", "decimal units"},
		{"negative uid", "[[rule]]\nname = \"a\"\nuid = [-1]\nheaps = []\n", "test.toml:3:"},
		{"uid not a list", "[[rule]]\nname = \"a\"\nuid = 0\nheaps = []\n", "test.toml:3:"},
		{"bad rate", "[[rule]]\nname = \"a\"\nheaps = []\nrate = \"fast\"\n", "test.toml:4:"},
		{"bad rate period", "[[rule]]\nname = \"a\"\nheaps = []\nrate = \"5/fortnight\"\n", "period"},
		{"bad session", "[[rule]]\nname = \"a\"\nheaps = []\nsession = \"yes\"\n", "test.toml:4:"},
		{"bad pattern", "[[rule]]\nname = \"a\"\nheaps = [\"sys tem\"]\n", "test.toml:3:"},
		{"bad duration", "[ledger]\nrelease_interval = \"soon\"\n", "test.toml:2:"},
		{"interval range", "[ledger]\nrelease_interval = \"1ms\"\n", "10ms to 1m"},
		{"no name", "[[rule]]\nheaps = []\n\n[[rule]]\nname = \"b\"\nheaps = []\n", "test.toml:1: rule 1: has no name"},
		{"no heaps", "[[rule]]\nname = \"a\"\nheaps = []\n\n[[rule]]\nname = \"b\"\n", "test.toml:5: rule 2 \"b\": has no heaps"},
		{"duplicate name", "[[rule]]\nname = \"a\"\nheaps = []\n[[rule]]\nname = \"a\"\nheaps = []\n", "rule 2: name \"a\" is also rule 1's"},
		{"daemon_user false", "[[rule]]\nname = \"a\"\ndaemon_user = false\nheaps = []\n", "daemon_user = false"},
		{"max_alloc 0", "[[rule]]\nname = \"a\"\nheaps = [\"x\"]\nmax_alloc = 0\n", "max_alloc = 0"},
		{"syntax", "[[rule]\nname = \"a\"\n", "test.toml:1:"},
		{"type", "[[rule]]\nname = 5\nheaps = []\n", "test.toml:2:"},
		{"nul", "name = \"a\x00\"\n", "NUL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text), &ParseOptions{Source: "test.toml", Lookup: names})
			if err == nil || !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an ErrSyntax containing %q", err, tc.want)
			}
		})
	}
}

func TestParseAll(t *testing.T) {
	p := parse(t, `
[ledger]
release_interval = "250ms"

[logind]
bus = "unix:path=/tmp/bus"
cache = "3s"
timeout = "500ms"

[[rule]]
name = "gfx"
uid = [7]
user = ["alice", "nosuchuser"]
gid = [9]
group = ["video", "nosuchgroup"]
session = "seat"
heaps = ["scanout*", "system"]
max_alloc = "8MiB"
rate = "5/250ms"

[rule.quota]
bytes = 1048576
buffers = 10

[rule.quota.contiguous]
bytes = "512KiB"

[rule.quota.emulated]
buffers = 3
`)
	want := &Policy{
		Source: "test.toml", ReleaseInterval: 250 * time.Millisecond,
		LogindBus: "unix:path=/tmp/bus", SessionCache: 3 * time.Second, LogindTimeout: 500 * time.Millisecond,
		Rules: []Rule{{
			Index: 1, Line: 10, Name: "gfx",
			UIDs: []uint32{7}, Users: []NamedID{{"alice", 1000, true}, {"nosuchuser", 0, false}},
			GIDs: []uint32{9}, Groups: []NamedID{{"video", 44, true}, {"nosuchgroup", 0, false}},
			Session: SessionSeat, Heaps: []Pattern{"scanout*", "system"}, MaxAlloc: 8 << 20,
			Rate: &Rate{N: 5, Per: 250 * time.Millisecond},
			Quota: QuotaSet{Total: Limit{Bytes: 1 << 20, Buffers: 10}, Classes: map[string]Limit{
				ClassContiguous: {Bytes: 512 << 10, Buffers: Unlimited},
				ClassEmulated:   {Bytes: Unlimited, Buffers: 3},
			}},
		}},
		Warnings: []string{
			`test.toml:10: rule 1 "gfx": user "nosuchuser" does not exist here: it matches nobody`,
			`test.toml:10: rule 1 "gfx": group "nosuchgroup" does not exist here: it matches nobody`,
		},
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// The built-in default is contrib/heapd.toml, parses, and says what the
// issue asks of it.
func TestDefaultPolicy(t *testing.T) {
	contrib, err := os.ReadFile("../../contrib/heapd.toml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(contrib, DefaultText()) {
		t.Fatal("contrib/heapd.toml and internal/policy/default.toml differ: keep them identical")
	}
	p := Default(names)
	a := NewAuthorizer(p, &Config{DaemonUID: 0, Sessions: fakeSessions{1002: {Active: true, Seat: true}}})
	ctx := context.Background()
	cma := heap.Info{Name: "contiguous", Backend: heap.BackendKernel, Properties: heap.Properties{Contiguous: true}}
	sys := heap.Info{Name: "system", Backend: heap.BackendKernel}
	scan := heap.Info{Name: "scanout/platform-vc4", Backend: heap.BackendKernel, Properties: heap.Properties{Contiguous: true}}
	raw := heap.Info{Name: "kernel/linux,cma", Backend: heap.BackendKernel, Properties: heap.Properties{Contiguous: true}}
	for _, tc := range []struct {
		who  string
		id   daemon.Identity
		heap heap.Info
		size int64
		code protocol.Code // 0: allowed
		rule string
	}{
		{"root", daemon.Identity{UID: 0}, raw, 1 << 30, 0, "root"},
		{"video member", daemon.Identity{UID: 1001, GID: 1001, Groups: []uint32{44}}, cma, 8 << 20, 0, "graphics-groups"},
		{"render primary", daemon.Identity{UID: 1001, GID: 105}, scan, 8 << 20, 0, "graphics-groups"},
		{"video, raw kernel heap", daemon.Identity{UID: 1001, Groups: []uint32{44}}, raw, 4096, protocol.CodeDenied, "graphics-groups"},
		{"video, too big", daemon.Identity{UID: 1001, Groups: []uint32{44}}, sys, 65 << 20, protocol.CodeQuota, "graphics-groups"},
		{"session user", daemon.Identity{UID: 1002}, sys, 4096, 0, "local-session"},
		{"nobody", daemon.Identity{UID: 65534, GID: 65534}, sys, 4096, protocol.CodeDenied, "none"},
	} {
		t.Run(tc.who, func(t *testing.T) {
			lim, err := a.AuthorizeAlloc(ctx, &tc.id, daemon.AllocRequest{Heap: tc.heap, Size: tc.size, Count: 1})
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(lim.Rule, fmt.Sprintf("%q", tc.rule)) {
					t.Errorf("decided by %s, want %s", lim.Rule, tc.rule)
				}
				return
			}
			if !errors.Is(err, tc.code) {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
		})
	}
	// The graphics quota: 128 MiB of contiguous memory, 512 MiB in all.
	_, lim := a.Describe(ctx, &daemon.Identity{UID: 1001, Groups: []uint32{44}})
	if lim.Total != (Limit{Bytes: 512 << 20, Buffers: 1024}) || lim.Class(ClassContiguous) != (Limit{Bytes: 128 << 20, Buffers: 128}) || lim.MaxAlloc != 64<<20 {
		t.Errorf("graphics limits %+v", lim)
	}
}

type fakeSessions map[uint32]logind.Presence

func (f fakeSessions) Presence(_ context.Context, uid uint32) (logind.Presence, error) {
	return f[uid], nil
}

type unavailable struct{ calls *int }

func (u unavailable) Presence(context.Context, uint32) (logind.Presence, error) {
	*u.calls++
	return logind.Presence{}, fmt.Errorf("%w: no bus", logind.ErrUnavailable)
}

const testPolicy = `
[[rule]]
name = "banned"
user = ["bob"]
heaps = []

[[rule]]
name = "gfx"
group = ["video"]
heaps = ["scanout*", "system"]
max_alloc = "1MiB"
rate = "3/s"

[[rule]]
name = "seated"
session = "seat"
heaps = ["system"]
`

func TestAuthorizerDecisions(t *testing.T) {
	var logs bytes.Buffer
	now := time.Unix(1000, 0)
	a := NewAuthorizer(parse(t, testPolicy), &Config{
		Logger:   slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Sessions: fakeSessions{1002: {Active: true, Seat: true}, 1003: {Active: true}},
		Now:      func() time.Time { return now },
	})
	ctx := context.Background()
	sys := daemon.AllocRequest{Heap: heap.Info{Name: "system"}, Size: 4096, Count: 1}
	video := &daemon.Identity{UID: 1000, Groups: []uint32{44}, Comm: "weston"}

	// A deny rule: first match wins even though bob is in video.
	_, err := a.AuthorizeAlloc(ctx, &daemon.Identity{UID: 1001, Groups: []uint32{44}}, sys)
	if !errors.Is(err, protocol.CodeDenied) || !strings.Contains(err.Error(), `rule 1 "banned" (test.toml line 2)`) || !strings.Contains(err.Error(), "grants no heap") {
		t.Errorf("banned: %v", err)
	}
	// Heap not granted: the message lists what is.
	_, err = a.AuthorizeAlloc(ctx, video, daemon.AllocRequest{Heap: heap.Info{Name: "contiguous"}, Size: 4096, Count: 1})
	if !errors.Is(err, protocol.CodeDenied) || !strings.Contains(err.Error(), "grants it scanout*, system only") {
		t.Errorf("contiguous: %v", err)
	}
	// "scanout*" covers scanout/<device>.
	if _, err := a.AuthorizeAlloc(ctx, video, daemon.AllocRequest{Heap: heap.Info{Name: "scanout/platform-vkms"}, Size: 4096, Count: 1}); err != nil {
		t.Errorf("scanout/platform-vkms: %v", err)
	}
	// max_alloc.
	_, err = a.AuthorizeAlloc(ctx, video, daemon.AllocRequest{Heap: heap.Info{Name: "system"}, Size: 1<<20 + 1, Count: 1})
	if !errors.Is(err, protocol.CodeQuota) || !strings.Contains(err.Error(), "max_alloc 1 MiB") {
		t.Errorf("max_alloc: %v", err)
	}
	// Rate: 3 per second, one already spent on scanout above.
	for i := range 2 {
		if _, err := a.AuthorizeAlloc(ctx, video, sys); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	_, err = a.AuthorizeAlloc(ctx, video, sys)
	if !errors.Is(err, protocol.CodeRateLimited) || !strings.Contains(err.Error(), "retry in 333ms") {
		t.Errorf("4th in a second: %v", err)
	}
	_, err = a.AuthorizeAlloc(ctx, video, daemon.AllocRequest{Heap: heap.Info{Name: "system"}, Size: 1, Count: 4})
	if !errors.Is(err, protocol.CodeRateLimited) || !strings.Contains(err.Error(), "smaller batches") {
		t.Errorf("batch over burst: %v", err)
	}
	now = now.Add(time.Second / 3)
	if _, err := a.AuthorizeAlloc(ctx, video, sys); err != nil {
		t.Errorf("after a third of a second: %v", err)
	}
	// The pre-check for a device set (no heap yet) spends no token.
	for range 5 {
		if _, err := a.AuthorizeAlloc(ctx, video, daemon.AllocRequest{Size: 4096, Count: 1}); err != nil {
			t.Fatalf("pre-check: %v", err)
		}
	}
	// Session rules.
	if _, err := a.AuthorizeAlloc(ctx, &daemon.Identity{UID: 1002}, sys); err != nil {
		t.Errorf("seated user: %v", err)
	}
	_, err = a.AuthorizeAlloc(ctx, &daemon.Identity{UID: 1003}, sys)
	if !errors.Is(err, protocol.CodeDenied) || !strings.Contains(err.Error(), "has no seat") {
		t.Errorf("seatless session: %v", err)
	}
	// No match: every rule says what it needs.
	_, err = a.AuthorizeAlloc(ctx, &daemon.Identity{UID: 1004, Comm: "cat"}, sys)
	for _, want := range []string{"uid 1004 (cat) matches no rule of test.toml", `rule 1 "banned" needs user bob`, `rule 2 "gfx" needs group video`,
		`rule 3 "seated" needs everyone with an active local session on a seat, and logind reports no active local session for uid 1004`} {
		if !errors.Is(err, protocol.CodeDenied) || !strings.Contains(err.Error(), want) {
			t.Errorf("no match: %v\nwant %q", err, want)
		}
	}
	// Every decision is logged with the identity and the rule.
	if !strings.Contains(logs.String(), `msg="allocation denied" uid=1004`) || !strings.Contains(logs.String(), `msg="allocation allowed" uid=1002`) {
		t.Errorf("log:\n%s", logs.String())
	}
	desc, lim := a.Describe(ctx, video)
	if !strings.Contains(desc, `rule 2 "gfx"`) || lim.MaxAlloc != 1<<20 || lim.Total != NoLimit {
		t.Errorf("describe: %s %+v", desc, lim)
	}
	if desc, lim := a.Describe(ctx, &daemon.Identity{UID: 1004}); !strings.Contains(desc, "denied") || lim.Total.Bytes != 0 {
		t.Errorf("describe unmatched: %s %+v", desc, lim)
	}
}

// Without logind, session rules match nobody; logind is asked at most
// once per cache period.
func TestNoLogind(t *testing.T) {
	calls := 0
	now := time.Unix(1000, 0)
	a := NewAuthorizer(parse(t, testPolicy), &Config{Sessions: unavailable{&calls}, Now: func() time.Time { return now }})
	sys := daemon.AllocRequest{Heap: heap.Info{Name: "system"}, Size: 4096, Count: 1}
	for range 3 {
		_, err := a.AuthorizeAlloc(context.Background(), &daemon.Identity{UID: 1002}, sys)
		if !errors.Is(err, protocol.CodeDenied) || !strings.Contains(err.Error(), "logind is not available here") {
			t.Fatalf("%v", err)
		}
	}
	if calls != 1 {
		t.Errorf("logind asked %d times within the cache period", calls)
	}
	now = now.Add(2 * time.Second)
	a.AuthorizeAlloc(context.Background(), &daemon.Identity{UID: 1002}, sys)
	if calls != 2 {
		t.Errorf("logind asked %d times after the cache period", calls)
	}
	// Nil Sessions: the same, without asking.
	b := NewAuthorizer(parse(t, testPolicy), nil)
	_, err := b.AuthorizeAlloc(context.Background(), &daemon.Identity{UID: 1002}, sys)
	if !errors.Is(err, protocol.CodeDenied) || !strings.Contains(err.Error(), "does not ask logind") {
		t.Errorf("%v", err)
	}
}

func TestSetPolicy(t *testing.T) {
	a := NewAuthorizer(parse(t, testPolicy), nil)
	id := &daemon.Identity{UID: 1004}
	sys := daemon.AllocRequest{Heap: heap.Info{Name: "system"}, Size: 4096, Count: 1}
	if _, err := a.AuthorizeAlloc(context.Background(), id, sys); err == nil {
		t.Fatal("allowed before the reload")
	}
	a.SetPolicy(parse(t, "[[rule]]\nname = \"all\"\nheaps = [\"*\"]\n"))
	if _, err := a.AuthorizeAlloc(context.Background(), id, sys); err != nil {
		t.Fatalf("after the reload: %v", err)
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pat, name string
		want      bool
	}{
		{"*", "kernel/linux,cma", true},
		{"scanout*", "scanout", true},
		{"scanout*", "scanout/platform-vc4", true},
		{"scanout/*", "scanout", false},
		{"kernel/*", "kernel/system", true},
		{"system", "system", true},
		{"system", "systems", false},
		{"s?stem", "system", true},
		{"*cma*", "kernel/linux,cma", true},
		{"a*b*c", "aXbYbZc", true},
		{"a*b*c", "aXbYbZ", false},
		{"", "", true},
	} {
		if got := Pattern(tc.pat).Match(tc.name); got != tc.want {
			t.Errorf("%q ~ %q = %v", tc.pat, tc.name, got)
		}
	}
}

func TestFormat(t *testing.T) {
	var b strings.Builder
	if err := parse(t, testPolicy+"\n[rule.quota]\nbytes = \"1GiB\"\n[rule.quota.contiguous]\nbuffers = 4\n").Format(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"policy test.toml: 3 rule(s)",
		"release_interval 1s",
		`rule 1 "banned" (line 2)`,
		"matches:   user bob [user bob = uid 1001]",
		"grants:    nothing",
		"grants:    heaps scanout*, system",
		"rate:      3/s buffers (bursts up to 3)",
		"quota:     1 GiB bytes, unlimited buffers per uid in total",
		"unlimited bytes, 4 buffers of contiguous memory",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
}
