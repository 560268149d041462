package store

import (
	"context"
	"errors"
	"net"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// redisErrorCommands are the commands this store sends (plus "dial" for
// connections that could not be opened): their error series exist at 0
// from the start.
var redisErrorCommands = []string{"dial", "ping", "evalsha", "eval", "script", "config", "xrange", "xrevrange", "hmget", "subscribe", "pipeline"}

// redisErrors counts failed Redis commands by command name, as a go-redis
// hook. redis.Nil (a missing key: an answer, not a failure) and a caller
// that gave up (context.Canceled) are not errors.
type redisErrors struct {
	errs *prometheus.CounterVec
}

func newRedisErrors() *redisErrors {
	r := &redisErrors{errs: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_redis_errors_total",
		Help: "Redis commands that failed (connection errors, timeouts, error replies such as NOSCRIPT or OOM), by command; dial = a connection that could not be opened. Missing keys are not errors.",
	}, []string{"command"})}
	for _, c := range redisErrorCommands {
		r.errs.WithLabelValues(c)
	}
	return r
}

// addErrorHook installs the error counter on the client (one line in
// NewRedis).
func (s *RedisStore) addErrorHook() {
	s.errs = newRedisErrors()
	s.client.AddHook(s.errs)
}

// Collector is the store's Prometheus metrics; the gateway registers it on
// its /metrics.
func (s *RedisStore) Collector() prometheus.Collector { return s.errs.errs }

func countable(err error) bool {
	return err != nil && !errors.Is(err, redis.Nil) && !errors.Is(err, context.Canceled)
}

func (r *redisErrors) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if countable(err) {
			r.errs.WithLabelValues("dial").Inc()
		}
		return c, err
	}
}

func (r *redisErrors) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if countable(err) && !optional(cmd) {
			r.errs.WithLabelValues(cmd.Name()).Inc()
		}
		return err
	}
}

// optional reports go-redis's own best-effort connection setup, CLIENT
// SETINFO and CLIENT MAINT_NOTIFICATIONS, which fail on servers before 7.2
// and which go-redis ignores; so does this count. The store sends no CLIENT
// command itself.
func optional(cmd redis.Cmder) bool { return cmd.Name() == "client" }

func (r *redisErrors) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		failed := false // a command of the pipeline has its own error
		for _, c := range cmds {
			if countable(c.Err()) {
				failed = true
				if !optional(c) {
					r.errs.WithLabelValues(c.Name()).Inc()
				}
			}
		}
		if countable(err) && !failed {
			r.errs.WithLabelValues("pipeline").Inc()
		}
		return err
	}
}
