package store

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// On Redis 7 the scripts are one FUNCTION library, loaded once per server:
// fast.lua and lib.lua are its top level, which Redis runs at FUNCTION LOAD
// only, and each script is a function of it. As EVALSHA scripts (Redis 6.2,
// or a server that refuses FUNCTION) the library's top level, some twenty
// local functions and tables, is run again on every call: BENCHMARKS.md
// ("Redis cost pass 2") measures what that costs per call.
//
// The library's name and its functions' names carry a hash of its source,
// so nodes of different versions sharing one Redis (a rolling upgrade) each
// call their own code: FUNCTION LOAD REPLACE of one version never replaces
// another's functions.

// luaFunctions builds the library from the scripts: its source, and the
// function name of each script.
func luaFunctions(scripts map[*redis.Script]luaBody) (source string, names map[*redis.Script]string) {
	// A fixed order, so that every node builds the same source.
	order := make([]*redis.Script, 0, len(scripts))
	for sc := range scripts {
		order = append(order, sc)
	}
	slices.SortFunc(order, func(a, b *redis.Script) int { return strings.Compare(scripts[a].name, scripts[b].name) })
	fns := make([]luaBody, len(order))
	for i, sc := range order {
		fns[i] = scripts[sc]
	}
	source, prefix := functionLibrary("presenced_", luaFast+"\n"+luaLib+"\n", "begin(ARGV)", fns)
	names = make(map[*redis.Script]string, len(order))
	for _, sc := range order {
		names[sc] = prefix + "_" + scripts[sc].name
	}
	return source, names
}

// functionLibrary is the source of a FUNCTION library whose top level is
// preamble and whose functions are fns, in that order (those withLib start
// with the statement begin), and the prefix of its function names: base
// and a hash of the source, which is also the library's name.
func functionLibrary(base, preamble, begin string, fns []luaBody) (source, prefix string) {
	var body strings.Builder
	body.WriteString(preamble)
	for _, f := range fns {
		body.WriteString("redis.register_function('%FN%" + f.name + "', function(KEYS, ARGV)\n")
		if f.withLib {
			body.WriteString(begin + "\n")
		}
		body.WriteString(f.body + "\nend)\n")
	}
	sum := sha1.Sum([]byte(body.String()))
	prefix = base + hex.EncodeToString(sum[:6])
	return "#!lua name=" + prefix + "\n" + strings.ReplaceAll(body.String(), "%FN%", prefix+"_"), prefix
}

// luaBody is one script as a function of the library.
type luaBody struct {
	name    string
	body    string
	withLib bool // it uses the library's top level: its begin statement comes first
}

// loadFunctions loads the library; an error means the server has no
// FUNCTION (before 7.0) or refuses it, and the scripts run as EVALSHA.
func (s *RedisStore) loadFunctions(ctx context.Context) error {
	return s.client.FunctionLoadReplace(ctx, s.scripts.library).Err()
}

// evalOn queues (on a pipeline) or runs sc on c: FCALL of its function when
// the library is in use, else EVALSHA. args include the common ARGV.
func (s *RedisStore) evalOn(ctx context.Context, c redis.Cmdable, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	if s.functions {
		return c.FCall(ctx, s.scripts.fn[sc], keys, args...)
	}
	return sc.EvalSha(ctx, c, keys, args...)
}

// isScriptMissing reports the error of a script call that Redis did not
// run because it lost the scripts (a restart, SCRIPT FLUSH, FUNCTION FLUSH,
// a failover to a server that never had them): load them and call again.
func isScriptMissing(err error) bool {
	return err != nil && (redis.HasErrorPrefix(err, "NOSCRIPT") ||
		strings.Contains(err.Error(), "Function not found"))
}
