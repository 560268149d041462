package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/presenced/presenced/client"
)

// verifyRoom reads a room the way an application subscriber would, with
// the project's Go client (package client: r3labs/sse's client underneath)
// watching it, and compares its count with the JSON API's answer: after a
// scenario, both must agree on the room's final state.
func verifyRoom(base, secret, room string) (viewCount, apiCount int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok := mintToken(secret, "bench-verifier", "Verifier", time.Hour)
	c, err := client.New(client.Config{BaseURL: base, Room: room, Watch: true, Token: tok})
	if err != nil {
		return 0, 0, err
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for {
		select {
		case ev := <-c.Events():
			if ev.Type != client.EventSync {
				continue
			}
			r, ok := c.Room(room)
			if !ok || !r.Synced {
				continue
			}
			n, err := roomCount(ctx, base, tok, room)
			return r.Count, n, err
		case err := <-done:
			return 0, 0, fmt.Errorf("client ended: %w", err)
		}
	}
}

func roomCount(ctx context.Context, base, tok, room string) (int, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/presence/room/"+room, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	var body struct {
		Count int `json:"count"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		return 0, err
	}
	return body.Count, nil
}
