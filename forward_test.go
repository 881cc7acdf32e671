package twice_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twicehq/twice"
	"github.com/twicehq/twice/forward"
)

func TestForwarderNeedsTheSecretAndAnAddress(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	node, err := twice.Open(ctx, twice.Config{DSN: "sqlite:" + filepath.Join(t.TempDir(), "t.db"), Name: "chat",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close(ctx)
	_, err = node.Forwarder(forward.Config{})
	if err == nil || !strings.Contains(err.Error(), "ClusterSecret is required") || !strings.Contains(err.Error(), "AdvertiseAddr is required") {
		t.Fatalf("err = %v", err)
	}
}
