package daemon

import (
	"context"
	"fmt"

	"github.com/heapd/heapd/heap"
	"github.com/heapd/heapd/protocol"
)

// AllocRequest is an allocation as the Authorizer and the Ledger see it:
// resolved to a heap and a size, after the wire request was validated.
type AllocRequest struct {
	// Heap is the heap that will supply the memory. Its Name is empty in
	// the pre-check the daemon makes before the resolver picks a heap for
	// a device set (see Authorizer).
	Heap heap.Info
	// Size is each buffer's requested size in bytes (before the heap
	// rounds it up to pages).
	Size int64
	// Count is how many buffers (a batch is all-or-nothing).
	Count int
}

// Heap classes: what kind of memory a heap hands out, whatever its name.
// Quotas per class keep a user from draining the scarce contiguous (CMA)
// pool through several names that map to it (contiguous, scanout, a
// kernel/<name> alias).
const (
	// ClassContiguous is physically contiguous memory (CMA heaps, and the
	// scanout heaps that map to them).
	ClassContiguous = "contiguous"
	// ClassSystem is the rest of the real kernel memory: the system heap,
	// udmabuf.
	ClassSystem = "system"
	// ClassEmulated is the emulated heap's memfds (CPU only).
	ClassEmulated = "emulated"
)

// HeapClass returns the class of h's memory: ClassEmulated for the emulated
// backend, ClassContiguous for physically contiguous heaps, ClassSystem
// otherwise.
func HeapClass(h heap.Info) string {
	switch {
	case h.Backend == heap.BackendEmulated:
		return ClassEmulated
	case h.Contiguous:
		return ClassContiguous
	}
	return ClassSystem
}

// Quota bounds what one uid holds: bytes and buffers charged at once.
// protocol.Unlimited in a field means no bound.
type Quota struct {
	Bytes, Buffers uint64
}

// NoQuota is a Quota without bounds.
var NoQuota = Quota{Bytes: protocol.Unlimited, Buffers: protocol.Unlimited}

// Limits are what the policy rule that decided allows one uid. The
// Authorizer returns them with every decision and the Ledger enforces
// them, so a uid's charges are checked against the rule that applies to
// the request at hand.
type Limits struct {
	// Rule names the rule the limits come from, for messages
	// (`rule 3 "graphics" (/etc/heapd/heapd.toml line 20)`).
	Rule string
	// Total bounds everything the uid holds.
	Total Quota
	// Classes bounds the uid per heap class (ClassContiguous...); a class
	// that is absent has no bound of its own. nil means none.
	Classes map[string]Quota
	// MaxAlloc is the largest single buffer, protocol.Unlimited for none.
	MaxAlloc uint64
}

// Unlimited returns Limits without any bound, attributed to rule.
func Unlimited(rule string) Limits {
	return Limits{Rule: rule, Total: NoQuota, MaxAlloc: protocol.Unlimited}
}

// Class returns the quota of class, NoQuota when there is none.
func (l Limits) Class(class string) Quota {
	if q, ok := l.Classes[class]; ok {
		return q
	}
	return NoQuota
}

// Authorizer decides whether a peer may allocate. It is where the policy
// file (heapd.toml) plugs in; the daemon calls it for every Allocate after
// resolving the heap and before touching the Ledger or the heap. For a
// device set, whose heap the resolver can only pick by allocating, the
// daemon first calls it with an empty req.Heap.Name (may this peer
// allocate at all, at this size?) and again once the heap is known.
//
// Implementations must be safe for concurrent use.
type Authorizer interface {
	// AuthorizeAlloc returns the limits that apply to peer to allow req.
	// A refusal is a *protocol.Error (CodeDenied, CodeRateLimited...)
	// whose message names the rule that decided and what would allow it;
	// it is sent to the client as is. Any other error is reported as
	// CodeInternal.
	AuthorizeAlloc(ctx context.Context, peer *Identity, req AllocRequest) (Limits, error)
	// Describe says in one line which rule applies to peer (Usage.Policy,
	// heapctl status), with that rule's limits.
	Describe(ctx context.Context, peer *Identity) (string, Limits)
}

// BuiltinPolicy is the Authorizer package daemon uses when its Config
// names none (tests, embedders): root and the daemon's own user may
// allocate from every heap; every other user may allocate from every heap
// that is not physically contiguous. Contiguous (CMA) memory is scarce and
// a single user could exhaust it, so without a policy that grants it and a
// quota that bounds it, it is kept for privileged users. There are no
// quotas. (heapd itself always runs with a policy: package policy.)
type BuiltinPolicy struct {
	// OwnerUID is the daemon's own uid.
	OwnerUID uint32
}

// AuthorizeAlloc implements Authorizer.
func (p BuiltinPolicy) AuthorizeAlloc(_ context.Context, peer *Identity, req AllocRequest) (Limits, error) {
	if p.privileged(peer) || !req.Heap.Contiguous {
		return Unlimited("built-in policy"), nil
	}
	return Limits{}, protocol.Errorf(protocol.CodeDenied,
		"uid %d may not allocate from %s: it is physically contiguous memory, which heapd's built-in policy (no policy file) keeps for root and uid %d; a policy file that grants %s to this user would allow it",
		peer.UID, req.Heap.Name, p.OwnerUID, req.Heap.Name)
}

// Describe implements Authorizer.
func (p BuiltinPolicy) Describe(_ context.Context, peer *Identity) (string, Limits) {
	if p.privileged(peer) {
		return fmt.Sprintf("built-in policy: uid %d is privileged (root or heapd's own user): every heap, no quota", peer.UID), Unlimited("built-in policy")
	}
	return "built-in policy: every non-contiguous heap, no quota; contiguous heaps need root or a policy file", Unlimited("built-in policy")
}

func (p BuiltinPolicy) privileged(peer *Identity) bool {
	return peer.UID == 0 || peer.UID == p.OwnerUID
}
