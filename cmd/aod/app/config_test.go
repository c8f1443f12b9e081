package app

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(env(nil))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:8777", c.Listen, "the API listens on loopback only unless asked")
	require.Equal(t, 1_000_000_000, c.LocalUIDBase)
	require.Equal(t, 65536, c.LocalUIDCount)
	require.True(t, filepath.IsAbs(c.DataDir))
	require.Equal(t, "data", filepath.Base(c.DataDir))
	require.Equal(t, "", c.DatabaseURL)
	require.Equal(t, 4<<20, c.MaxBodyBytes)
	require.Equal(t, "local", c.Sandbox)
	require.Equal(t, "private", c.LocalNetwork)
	require.Equal(t, "https://api.sprites.dev", c.SpritesBaseURL)
	require.Equal(t, "aod", c.SpriteNamePrefix)
	require.Equal(t, 600*time.Second, c.DefaultTimeout)
	require.Equal(t, 100, c.DefaultMaxConcurrentSessions)
	require.Equal(t, 15*time.Second, c.SSEHeartbeat)
	require.Equal(t, 600*time.Second, c.SSEStale)
	require.False(t, c.DevPublish)
	require.Equal(t, int64(64<<20), c.MaxTurnOutput)
	require.Equal(t, int64(256<<20), c.MaxSessionOutput)
	require.Equal(t, 5*time.Second, c.ReconcileInterval)
	require.Equal(t, 5*time.Second, c.DBTimeout)
}

func TestLoadConfigValues(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(env(map[string]string{
		"SPRITES_API_KEY":           "tok",
		"DJANGO_SECRET_KEY":         "dj",
		"FIELD_ENCRYPTION_KEYS_OLD": "a, b,,",
		"AOD_SSE_HEARTBEAT":         "2",
		"AOD_SSE_STALE":             "1m",
		"DATABASE_URL":              "postgres://u@h/db",
		"AOD_LOCAL_BINDS":           "/srv/cache:/opt/cache, /a:/b",
		"AOD_LOCAL_UID_BASE":        "200000",
		"AOD_LOCAL_UID_COUNT":       "1000",
		"AOD_LISTEN":                ":8777",
		"AOD_MAX_TURN_OUTPUT":       "2MiB",
		"AOD_MAX_SESSION_OUTPUT":    "1048576",
		"AOD_RECONCILE_INTERVAL":    "250ms",
	}))
	require.NoError(t, err)
	require.Equal(t, ":8777", c.Listen)
	require.Equal(t, 200000, c.LocalUIDBase)
	require.Equal(t, 1000, c.LocalUIDCount)
	require.Equal(t, int64(2<<20), c.MaxTurnOutput)
	require.Equal(t, int64(1<<20), c.MaxSessionOutput)
	require.Equal(t, []Bind{{"/srv/cache", "/opt/cache"}, {"/a", "/b"}}, c.LocalBinds)
	require.Equal(t, "sprites", c.Sandbox)
	require.Equal(t, "dj", c.EncryptionKey)
	require.Equal(t, []string{"a", "b"}, c.EncryptionKeysOld)
	require.Equal(t, 2*time.Second, c.SSEHeartbeat)
	require.Equal(t, time.Minute, c.SSEStale)
	require.Equal(t, 250*time.Millisecond, c.ReconcileInterval)

	c, err = LoadConfig(env(map[string]string{"FIELD_ENCRYPTION_KEY": "f", "DJANGO_SECRET_KEY": "dj"}))
	require.NoError(t, err)
	require.Equal(t, "f", c.EncryptionKey)
}

func TestLoadConfigRejectsBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, value string }{
		{"AOD_MAX_BODY_BYTES", "lots"},
		{"AOD_MAX_BODY_BYTES", "-1"},
		{"DEFAULT_TIMEOUT", "5"},
		{"DEFAULT_MAX_CONCURRENT_SESSIONS", "x"},
		{"AOD_SANDBOX", "docker"},
		{"AOD_LOCAL_NETWORK", "bridge"},
		{"AOD_SSE_HEARTBEAT", "soon"},
		{"AOD_SSE_STALE", "0"},
		{"AOD_RECONCILE_INTERVAL", "-1s"},
		{"AOD_DEV_PUBLISH", "maybe"},
		{"SPRITES_BASE_URL", "ftp://x"},
		{"DATABASE_URL", "mysql://x"},
		{"AOD_LISTEN", "8777"},
		{"AOD_LOCAL_UID_BASE", "0"},
		{"AOD_LOCAL_UID_BASE", "4294967290"},
		{"AOD_LOCAL_UID_COUNT", "0"},
		{"SPRITE_NAME_PREFIX", "Bad_Prefix"},
		{"AOD_LOCAL_BINDS", "relative:/x"},
		{"AOD_LOCAL_BINDS", "/only-src"},
		{"AOD_MAX_TURN_OUTPUT", "0"},
		{"AOD_MAX_TURN_OUTPUT", "64 pages"},
		{"AOD_MAX_SESSION_OUTPUT", "-1MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			t.Parallel()
			_, err := LoadConfig(env(map[string]string{tt.name: tt.value}))
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.name)
			require.NotContains(t, err.Error(), "\n")
		})
	}
}
