package main

import (
	"slices"
	"sync"
	"time"
)

// samples collects durations from many goroutines.
type samples struct {
	mu  sync.Mutex
	d   []time.Duration
	cap int
}

func newSamples(capHint int) *samples { return &samples{d: make([]time.Duration, 0, capHint)} }

func (s *samples) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *samples) addAll(ds []time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, ds...)
	s.mu.Unlock()
}

func (s *samples) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.d)
}

// summary is a distribution in milliseconds.
type summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_ms"`
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func (s *samples) summary() summary {
	s.mu.Lock()
	d := slices.Clone(s.d)
	s.mu.Unlock()
	return summarize(d)
}

func summarize(d []time.Duration) summary {
	if len(d) == 0 {
		return summary{}
	}
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	p := func(q float64) float64 {
		i := int(q * float64(len(d)))
		if i >= len(d) {
			i = len(d) - 1
		}
		return msf(d[i])
	}
	return summary{N: len(d), Min: msf(d[0]), P50: p(0.50), P90: p(0.90), P99: p(0.99), Max: msf(d[len(d)-1]),
		Mean: round2(msf(sum / time.Duration(len(d))))}
}

func msf(d time.Duration) float64 { return round2(float64(d) / float64(time.Millisecond)) }
