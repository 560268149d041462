package store

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// On Redis 7 the cluster scripts are one FUNCTION library, loaded on every
// primary (replicas get it by replication, so a promoted one has it): the
// shared library (lua/cluster/lib.lua) is its top level, run at FUNCTION
// LOAD only, where as an EVALSHA script it runs again on every emitting
// call. Its name carries a hash of its source, as the single-primary
// library's does (redis_functions.go), so two versions can share a cluster
// during a rolling upgrade. A node whose FUNCTION LOAD is refused calls the
// same scripts with EVALSHA.

// newClusterScript makes the EVALSHA form of a script and records it for
// the library.
func (s *ClusterStore) newClusterScript(name, body string, withLib bool) *redis.Script {
	var sc *redis.Script
	if withLib {
		sc = redis.NewScript(luaCLib + "\nbegin(KEYS, ARGV)\n" + body)
	} else {
		sc = redis.NewScript(body)
	}
	s.bodies = append(s.bodies, luaBody{name, body, withLib})
	s.fnOf[sc] = name
	return sc
}

// buildLibrary turns the recorded scripts into the library's source and
// the full function name of each script.
func (s *ClusterStore) buildLibrary() {
	var prefix string
	s.library, prefix = functionLibrary("presenced_cluster_", luaCLib+"\n", "begin(KEYS, ARGV)", s.bodies)
	for sc, name := range s.fnOf {
		s.fnOf[sc] = prefix + "_" + name
	}
}

// loadFunctions loads the library on every primary.
func (s *ClusterStore) loadFunctions(ctx context.Context) error {
	return s.client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.FunctionLoadReplace(ctx, s.library).Err()
	})
}

// evalOn queues c on pipe as FCALL of its function when the library is in
// use, else as EVALSHA.
func (s *ClusterStore) evalOn(ctx context.Context, pipe redis.Pipeliner, c *call) *redis.Cmd {
	if s.functions.Load() {
		return pipe.FCall(ctx, s.fnOf[c.sc], c.keys, c.args...)
	}
	return c.sc.EvalSha(ctx, pipe, c.keys, c.args...)
}

// reloadFunctions loads the library again in the background (a primary
// that lost it: restarted empty, or a new node), at most one load at a time.
func (s *ClusterStore) reloadFunctions() {
	if !s.functions.Load() || !s.loading.TryLock() {
		return
	}
	go func() {
		defer s.loading.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), opBatchTimeout)
		defer cancel()
		if err := s.loadFunctions(ctx); err != nil {
			s.log.Debug("presence: reloading the cluster's function library failed", "error", err)
		}
	}()
}
