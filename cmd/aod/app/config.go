// Package app assembles an aod node: configuration, database, sandbox
// backend, actor engine and HTTP server, started and stopped in order.
package app

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aodhq/aod/sprites/runner"
)

// Config is the node configuration, read from environment variables (see
// the README's configuration table).
type Config struct {
	Listen       string // AOD_LISTEN
	DataDir      string // AOD_DATA_DIR
	DatabaseURL  string // DATABASE_URL; empty = embedded SQLite in DataDir
	MaxBodyBytes int    // AOD_MAX_BODY_BYTES
	LogLevel     string // AOD_LOG_LEVEL
	LogFormat    string // AOD_LOG_FORMAT: text or json

	EncryptionKey     string   // FIELD_ENCRYPTION_KEY, else DJANGO_SECRET_KEY
	EncryptionKeysOld []string // FIELD_ENCRYPTION_KEYS_OLD

	Sandbox          string // AOD_SANDBOX: local or sprites
	LocalNetwork     string // AOD_LOCAL_NETWORK: private or host
	LocalBinds       []Bind // AOD_LOCAL_BINDS: extra read-only binds
	LocalUIDBase     int    // AOD_LOCAL_UID_BASE: first host uid of sandboxes
	LocalUIDCount    int    // AOD_LOCAL_UID_COUNT: how many host uids sandboxes use
	SpritesAPIKey    string // SPRITES_API_KEY
	SpritesBaseURL   string // SPRITES_BASE_URL
	SpriteNamePrefix string // SPRITE_NAME_PREFIX

	LocalLimits runner.Limits // AOD_LOCAL_LIMITS, AOD_LOCAL_MEMORY, …: per-sandbox limits

	DefaultTimeout               time.Duration // DEFAULT_TIMEOUT (seconds)
	DefaultMaxConcurrentSessions int           // DEFAULT_MAX_CONCURRENT_SESSIONS

	MaxTurnOutput    int64 // AOD_MAX_TURN_OUTPUT: bytes of output a turn may store
	MaxSessionOutput int64 // AOD_MAX_SESSION_OUTPUT: bytes of output a session may store

	SSEHeartbeat time.Duration // AOD_SSE_HEARTBEAT
	SSEStale     time.Duration // AOD_SSE_STALE
	DevPublish   bool          // AOD_DEV_PUBLISH

	ReconcileInterval   time.Duration // AOD_RECONCILE_INTERVAL
	DBTimeout           time.Duration // AOD_DB_TIMEOUT
	SSEWriteTimeout     time.Duration // AOD_SSE_WRITE_TIMEOUT
	SSESubscriberBuffer int           // AOD_SSE_SUBSCRIBER_BUFFER (bytes)
	SSESubscribeTimeout time.Duration // AOD_SSE_SUBSCRIBE_TIMEOUT
}

// SQLitePath is the embedded database file used without DATABASE_URL.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "aod.db") }

// KeyFilePath is where a generated encryption key is kept (D14).
func (c *Config) KeyFilePath() string { return filepath.Join(c.DataDir, "encryption.key") }

// SandboxDir is where the local backend keeps its sandboxes.
func (c *Config) SandboxDir() string { return filepath.Join(c.DataDir, "sandboxes") }

// LoadConfig reads the configuration through getenv (os.Getenv in
// production). A bad value fails with a one-line error naming the variable.
func LoadConfig(getenv func(string) string) (*Config, error) {
	p := parser{getenv: getenv}
	c := &Config{
		Listen:       p.str("AOD_LISTEN", "127.0.0.1:8777"),
		DataDir:      p.str("AOD_DATA_DIR", "./data"),
		DatabaseURL:  p.str("DATABASE_URL", ""),
		MaxBodyBytes: p.intRange("AOD_MAX_BODY_BYTES", 4<<20, 1024, 1<<30),
		LogLevel:     p.oneOf("AOD_LOG_LEVEL", "info", "debug", "info", "warn", "error"),
		LogFormat:    p.oneOf("AOD_LOG_FORMAT", "text", "text", "json"),

		EncryptionKey: p.str("FIELD_ENCRYPTION_KEY", p.str("DJANGO_SECRET_KEY", "")),

		LocalNetwork:     p.oneOf("AOD_LOCAL_NETWORK", "private", "private", "host"),
		LocalUIDBase:     p.intRange("AOD_LOCAL_UID_BASE", runner.DefaultUIDBase, runner.MinUIDBase, runner.MaxUID-1),
		LocalUIDCount:    p.intRange("AOD_LOCAL_UID_COUNT", runner.DefaultUIDCount, 1, 1<<24),
		SpritesAPIKey:    p.str("SPRITES_API_KEY", ""),
		SpritesBaseURL:   p.url("SPRITES_BASE_URL", "https://api.sprites.dev"),
		SpriteNamePrefix: p.str("SPRITE_NAME_PREFIX", "aod"),

		DefaultTimeout:               time.Duration(p.intRange("DEFAULT_TIMEOUT", 600, 10, 3600)) * time.Second,
		DefaultMaxConcurrentSessions: p.intRange("DEFAULT_MAX_CONCURRENT_SESSIONS", 100, 0, 1_000_000),

		MaxTurnOutput:    p.size("AOD_MAX_TURN_OUTPUT", 64<<20, 1),
		MaxSessionOutput: p.size("AOD_MAX_SESSION_OUTPUT", 256<<20, 1),

		SSEHeartbeat: p.duration("AOD_SSE_HEARTBEAT", 15*time.Second),
		SSEStale:     p.duration("AOD_SSE_STALE", 600*time.Second),
		DevPublish:   p.boolean("AOD_DEV_PUBLISH", false),

		ReconcileInterval:   p.duration("AOD_RECONCILE_INTERVAL", 5*time.Second),
		DBTimeout:           p.duration("AOD_DB_TIMEOUT", 5*time.Second),
		SSEWriteTimeout:     p.duration("AOD_SSE_WRITE_TIMEOUT", 30*time.Second),
		SSESubscriberBuffer: p.intRange("AOD_SSE_SUBSCRIBER_BUFFER", 4<<20, 64<<10, 1<<30),
		SSESubscribeTimeout: p.duration("AOD_SSE_SUBSCRIBE_TIMEOUT", 5*time.Second),
	}
	defaultSandbox := "local"
	if c.SpritesAPIKey != "" {
		defaultSandbox = "sprites"
	}
	c.Sandbox = p.oneOf("AOD_SANDBOX", defaultSandbox, "local", "sprites")
	c.LocalBinds = p.binds("AOD_LOCAL_BINDS")
	c.LocalLimits = p.localLimits()
	if old := p.str("FIELD_ENCRYPTION_KEYS_OLD", ""); old != "" {
		for _, k := range strings.Split(old, ",") {
			if k = strings.TrimSpace(k); k != "" {
				c.EncryptionKeysOld = append(c.EncryptionKeysOld, k)
			}
		}
	}
	if p.err == nil && c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			p.fail("DATABASE_URL", "must be a postgres:// URL")
		}
	}
	if p.err == nil {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			p.fail("AOD_LISTEN", "must be host:port or :port")
		}
	}
	if p.err == nil && int64(c.LocalUIDBase)+int64(c.LocalUIDCount) > runner.MaxUID {
		p.fail("AOD_LOCAL_UID_BASE", fmt.Sprintf("plus AOD_LOCAL_UID_COUNT must not exceed %d", int64(runner.MaxUID)))
	}
	if p.err == nil && !validPrefix(c.SpriteNamePrefix) {
		p.fail("SPRITE_NAME_PREFIX", "must be lowercase letters, digits and dashes, at most 40 characters")
	}
	if p.err == nil {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			p.fail("AOD_DATA_DIR", err.Error())
		}
		c.DataDir = abs
	}
	if p.err != nil {
		return nil, p.err
	}
	return c, nil
}

func validPrefix(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

type parser struct {
	getenv func(string) string
	err    error
}

func (p *parser) fail(name, why string) {
	if p.err == nil {
		p.err = fmt.Errorf("invalid %s: %s", name, why)
	}
}

func (p *parser) str(name, def string) string {
	if v := strings.TrimSpace(p.getenv(name)); v != "" {
		return v
	}
	return def
}

func (p *parser) oneOf(name, def string, allowed ...string) string {
	v := p.str(name, def)
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	p.fail(name, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
	return def
}

func (p *parser) intRange(name string, def, lo, hi int) int {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.fail(name, fmt.Sprintf("%q is not an integer", v))
		return def
	}
	if n < lo || n > hi {
		p.fail(name, fmt.Sprintf("%d is outside %d..%d", n, lo, hi))
		return def
	}
	return n
}

// duration accepts Go durations ("15s", "1m") or a bare number of seconds.
func (p *parser) duration(name string, def time.Duration) time.Duration {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		n, nerr := strconv.ParseFloat(v, 64)
		if nerr != nil {
			p.fail(name, fmt.Sprintf("%q is not a duration (e.g. 15s) or a number of seconds", v))
			return def
		}
		d = time.Duration(n * float64(time.Second))
	}
	if d <= 0 {
		p.fail(name, "must be positive")
		return def
	}
	return d
}

func (p *parser) boolean(name string, def bool) bool {
	v := p.str(name, "")
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, fmt.Sprintf("%q is not a boolean", v))
		return def
	}
	return b
}

func (p *parser) url(name, def string) string {
	v := p.str(name, def)
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.fail(name, fmt.Sprintf("%q is not an http(s) URL", v))
		return def
	}
	return strings.TrimRight(v, "/")
}

// Bind is a host path bound read-only into every local sandbox.
type Bind struct{ Src, Dst string }

// binds parses "SRC:DST,SRC:DST" with absolute paths.
func (p *parser) binds(name string) []Bind {
	v := p.str(name, "")
	if v == "" {
		return nil
	}
	var out []Bind
	for _, item := range strings.Split(v, ",") {
		src, dst, ok := strings.Cut(strings.TrimSpace(item), ":")
		if !ok || !filepath.IsAbs(src) || !filepath.IsAbs(dst) {
			p.fail(name, fmt.Sprintf("%q is not SRC:DST with absolute paths", item))
			return nil
		}
		out = append(out, Bind{Src: src, Dst: dst})
	}
	return out
}
