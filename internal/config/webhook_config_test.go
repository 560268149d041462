package config

import (
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
)

func TestWebhookFlags(t *testing.T) {
	base := []string{"--secret", "s3cret-s3cret-s3cret-s3cret-s3cret"}
	sec := "whsec-0123456789abcdef"
	c, err := Parse(append(base, "--webhook-url", "https://a.example/h,https://b.example/h", "--webhook-url", "http://c:9/x", "--webhook-secret", sec), env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"https://a.example/h", "https://b.example/h", "http://c:9/x"}; !reflect.DeepEqual(c.WebhookURLs, want) {
		t.Errorf("urls %q, want %q", c.WebhookURLs, want)
	}
	if string(c.WebhookSecret) != sec || c.WebhookRetryFor != 24*time.Hour {
		t.Errorf("secret %q retry-for %s", c.WebhookSecret, c.WebhookRetryFor)
	}
	// The environment's list, replaced by flags when both are given.
	e := env(map[string]string{"PRESENCE_WEBHOOK_URL": "https://e1/h, https://e2/h", "PRESENCE_WEBHOOK_SECRET": sec, "PRESENCE_WEBHOOK_RETRY_FOR": "1h"})
	c, err = Parse(base, e, io.Discard)
	if err != nil || len(c.WebhookURLs) != 2 || c.WebhookRetryFor != time.Hour {
		t.Fatalf("env: %v %q %s", err, c.WebhookURLs, c.WebhookRetryFor)
	}
	c, err = Parse(append(base, "--webhook-url", "https://f/h"), e, io.Discard)
	if err != nil || !reflect.DeepEqual(c.WebhookURLs, []string{"https://f/h"}) {
		t.Fatalf("flag over env: %v %q", err, c.WebhookURLs)
	}
	for _, args := range [][]string{
		{"--webhook-url", "https://a/h"},                              // no secret
		{"--webhook-url", "https://a/h", "--webhook-secret", "short"}, // too short
		{"--webhook-url", "ftp://a/h", "--webhook-secret", sec},       // scheme
		{"--webhook-url", "/relative", "--webhook-secret", sec},       // not absolute
		{"--webhook-url", "https://a/h", "--webhook-secret", sec, "--webhook-retry-for", "0s"},
	} {
		if _, err := Parse(append(base, args...), env(nil), io.Discard); !errors.Is(err, ErrWebhook) && !errors.Is(err, ErrDuration) {
			t.Errorf("%q: err %v", args, err)
		}
	}
}
