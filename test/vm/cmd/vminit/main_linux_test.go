//go:build linux

package main

import "testing"

func TestTroubleMessage(t *testing.T) {
	for _, tc := range []struct {
		rec  string
		want bool
	}{
		{"4,812,5123456,-;WARNING: CPU: 0 PID: 61 at drivers/gpu/drm/vkms/vkms_composer.c:123 blend+0x1/0x2\n SUBSYSTEM=platform\n", true},
		{"1,900,6000000,-;BUG: kernel NULL pointer dereference, address: 0000000000000008\n", true},
		{"4,901,6000001,-;Oops: 0002 [#1] PREEMPT\n", true},
		{"4,902,6000002,c;Call Trace:\n", true},
		{"0,903,6000003,-;Kernel panic - not syncing: Fatal exception\n", true},
		{"4,904,6000004,-;general protection fault, probably for non-canonical address 0xdead: 0000 [#1]\n", true},
		{"6,10,100,-;vkms: module verification failed\n", false},
		{"6,11,101,-;Run /init as init process\n", false},
		{"6,12,102,-;printk: a message mentioning BUG: in the middle\n", false},
		{"no separator WARNING: CPU", false},
	} {
		if _, got := troubleMessage(tc.rec); got != tc.want {
			t.Errorf("troubleMessage(%q) = %v, want %v", tc.rec, got, tc.want)
		}
	}
}
