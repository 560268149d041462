package client_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a goroutine outlives the tests: a Run that
// returned must leave no reader, idle timer or r3labs read loop behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
