package protocol

import "testing"

// The codec's hot path: an Allocate request in, an Allocated reply out,
// per allocation. AppendEncode into a reused buffer is what a server
// loop can do; Encode allocates the packet.

var (
	benchAllocate  = &Allocate{Target: TargetHeap, Shape: ShapeSize, Count: 1, Size: 1 << 20, Heap: "system", Label: "weston"}
	benchAllocated = &Allocated{Flags: BufferEmulated, Size: 1 << 20, Heap: "system", Backend: "emulated", Name: "heapd:uid1000:weston", IDs: []uint64{42}}
)

func BenchmarkEncodeAllocate(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, MaxMessageSize)
	for b.Loop() {
		var err error
		if buf, err = AppendEncode(buf[:0], 1, benchAllocate); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeAllocated(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, MaxMessageSize)
	for b.Loop() {
		var err error
		if buf, err = AppendEncode(buf[:0], 1, benchAllocated); err != nil {
			b.Fatal(err)
		}
	}
}

func benchDecode(b *testing.B, m Message) {
	b.Helper()
	pkt, err := Encode(7, m)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, _, err := Decode(pkt, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeAllocate(b *testing.B) { benchDecode(b, benchAllocate) }

func BenchmarkDecodeAllocated(b *testing.B) {
	pkt, err := Encode(7, benchAllocated)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if _, _, err := Decode(pkt, 1); err != nil {
			b.Fatal(err)
		}
	}
}
