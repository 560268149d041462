package redisslot

import "testing"

// The Redis Cluster specification's test vector and the hash tag rules
// (a real cluster's CLUSTER KEYSLOT agrees: store/redistest's cluster tests).
func TestOf(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want int
	}{
		{"123456789", 0x31C3 % Slots}, // CRC16/XMODEM("123456789") = 0x31C3
		{"foo", 12182},
		{"{user1000}.following", Of("user1000")},
		{"foo{}{bar}", Of("foo{}{bar}")}, // an empty first tag: the whole key
		{"foo{{bar}}zap", Of("{bar")},
		{"foo{bar}{zap}", Of("bar")},
		{"{", Of("{")},
	} {
		if got := Of(tc.key); got != tc.want {
			t.Errorf("Of(%q) = %d, want %d", tc.key, got, tc.want)
		}
	}
	if Of("foo{}{bar}") == Of("bar") {
		t.Error("an empty first tag must not fall through to the second")
	}
}
