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
	// Heap is the heap that will supply the memory.
	Heap heap.Info
	// Size is each buffer's requested size in bytes (before the heap
	// rounds it up to pages).
	Size int64
	// Count is how many buffers (a batch is all-or-nothing).
	Count int
}

// Authorizer decides whether a peer may allocate. It is where the policy
// file (heapd.toml) plugs in; the daemon calls it for every Allocate after
// resolving the heap and before touching the Ledger or the heap.
//
// Implementations must be safe for concurrent use.
type Authorizer interface {
	// AuthorizeAlloc returns nil to allow req for peer. A refusal is a
	// *protocol.Error (CodeDenied, CodeRateLimited...) whose message names
	// the rule that decided and what would allow it; it is sent to the
	// client as is. Any other error is reported as CodeInternal.
	AuthorizeAlloc(ctx context.Context, peer *Identity, req AllocRequest) error
	// Describe says in one line which rule applies to peer (Usage.Policy,
	// heapctl status).
	Describe(peer *Identity) string
}

// BuiltinPolicy is the Authorizer heapd uses when no policy is configured:
// root and the daemon's own user may allocate from every heap; every other
// user may allocate from every heap that is not physically contiguous.
// Contiguous (CMA) memory is scarce and a single user could exhaust it, so
// without a policy that grants it and a quota that bounds it, it is kept
// for privileged users. There are no quotas.
type BuiltinPolicy struct {
	// OwnerUID is the daemon's own uid.
	OwnerUID uint32
}

// AuthorizeAlloc implements Authorizer.
func (p BuiltinPolicy) AuthorizeAlloc(_ context.Context, peer *Identity, req AllocRequest) error {
	if p.privileged(peer) || !req.Heap.Contiguous {
		return nil
	}
	return protocol.Errorf(protocol.CodeDenied,
		"uid %d may not allocate from %s: it is physically contiguous memory, which heapd's built-in policy (no policy file) keeps for root and uid %d; a policy file that grants %s to this user would allow it",
		peer.UID, req.Heap.Name, p.OwnerUID, req.Heap.Name)
}

// Describe implements Authorizer.
func (p BuiltinPolicy) Describe(peer *Identity) string {
	if p.privileged(peer) {
		return fmt.Sprintf("built-in policy: uid %d is privileged (root or heapd's own user): every heap, no quota", peer.UID)
	}
	return "built-in policy: every non-contiguous heap, no quota; contiguous heaps need root or a policy file"
}

func (p BuiltinPolicy) privileged(peer *Identity) bool {
	return peer.UID == 0 || peer.UID == p.OwnerUID
}
