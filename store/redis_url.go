package store

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SentinelScheme is the --redis-url scheme for a primary found through
// Redis Sentinel:
//
//	redis+sentinel://[[user]:password@]host1:port1[,host2:port2…]/mastername[/db][?sentinel_password=…]
//
// The hosts are sentinels; the user and password authenticate to the Redis
// servers (the primary and its replicas), sentinel_password (optional) to
// the sentinels themselves.
const SentinelScheme = "redis+sentinel"

// newRedisClient builds the client for a redis://, rediss:// or
// redis+sentinel:// URL and returns it with the database it uses (for the
// keyspace-notification channel name).
func newRedisClient(redisURL string) (*redis.Client, int, error) {
	if rest, ok := strings.CutPrefix(redisURL, SentinelScheme+"://"); ok {
		fo, err := parseSentinelURL(rest)
		if err != nil {
			return nil, 0, err
		}
		return redis.NewFailoverClient(fo), fo.DB, nil
	}
	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, 0, err
	}
	return redis.NewClient(ropts), ropts.DB, nil
}

// parseSentinelURL parses what follows "redis+sentinel://". It is parsed by
// hand because net/url refuses a comma-separated host list.
func parseSentinelURL(rest string) (*redis.FailoverOptions, error) {
	rest, query, _ := strings.Cut(rest, "?")
	fo := &redis.FailoverOptions{}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo := rest[:at]
		rest = rest[at+1:]
		user, pass, hasPass := strings.Cut(userinfo, ":")
		var err error
		if fo.Username, err = url.PathUnescape(user); err != nil {
			return nil, fmt.Errorf("sentinel url: user: %w", err)
		}
		if hasPass {
			if fo.Password, err = url.PathUnescape(pass); err != nil {
				return nil, fmt.Errorf("sentinel url: password: %w", err)
			}
		}
	}
	hosts, path, _ := strings.Cut(rest, "/")
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return nil, fmt.Errorf("sentinel url: sentinel address %q: want host:port", h)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return nil, fmt.Errorf("sentinel url: sentinel address %q: bad port", h)
		}
		fo.SentinelAddrs = append(fo.SentinelAddrs, h)
	}
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) == 0 || parts[0] == "" {
		return nil, errors.New("sentinel url: the master name is missing (redis+sentinel://host:port,…/mastername[/db])")
	}
	if len(parts) > 2 {
		return nil, fmt.Errorf("sentinel url: path %q: want /mastername[/db]", path)
	}
	fo.MasterName = parts[0]
	if len(parts) == 2 {
		db, err := strconv.Atoi(parts[1])
		if err != nil || db < 0 {
			return nil, fmt.Errorf("sentinel url: database %q: want a number", parts[1])
		}
		fo.DB = db
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, fmt.Errorf("sentinel url: query: %w", err)
	}
	for k, v := range q {
		switch k {
		case "sentinel_password":
			fo.SentinelPassword = v[len(v)-1]
		default:
			return nil, fmt.Errorf("sentinel url: unknown parameter %q", k)
		}
	}
	return fo, nil
}
