package handlers

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: hub
// workers, r3labs streams, per-connection drivers, feed subscriptions.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
