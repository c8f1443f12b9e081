package runtimes

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestEnvFile(t *testing.T) {
	t.Parallel()

	t.Run("OrderAndQuoting", func(t *testing.T) {
		t.Parallel()
		got := EnvFile(
			[]EnvVar{{"OTEL_EXPORTER_OTLP_HEADERS", "x-honeycomb-team=abc"}, {"Z_STATIC", "first"}},
			"0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90",
			"claude-sonnet-4-5",
			map[string]string{
				"ZED":       "last env",
				"API_URL":   "https://api.example.com/v1?a=1&b=2",
				"EMPTY":     "",
				"GREETING":  "it's \"quoted\"",
				"MULTILINE": "line1\nline2",
				"SHARED":    "from-env",
			},
			map[string]string{
				"SHARED":            "from-secret",
				"ANTHROPIC_API_KEY": "sk-ant-123",
				"BLANK":             "",
			},
		)
		want := "OTEL_EXPORTER_OTLP_HEADERS=x-honeycomb-team=abc\n" +
			"Z_STATIC=first\n" +
			"AOD_SESSION_ID=0b6f0d8e-3c1a-4b8e-9a51-2f1f3c5d7e90\n" +
			"AOD_MODEL=claude-sonnet-4-5\n" +
			"API_URL='https://api.example.com/v1?a=1&b=2'\n" +
			"EMPTY=''\n" +
			`GREETING='it'"'"'s "quoted"'` + "\n" +
			"MULTILINE='line1\nline2'\n" +
			"SHARED=from-env\n" +
			"ZED='last env'\n" +
			"ANTHROPIC_API_KEY=sk-ant-123\n" +
			"BLANK=''\n" +
			"SHARED=from-secret\n"
		require.Equal(t, want, string(got))
	})

	t.Run("Minimal", func(t *testing.T) {
		t.Parallel()
		got := EnvFile(nil, "sid", "gpt-5 mini", nil, nil)
		require.Equal(t, "AOD_SESSION_ID=sid\nAOD_MODEL='gpt-5 mini'\n", string(got))
	})

	t.Run("EmptySessionAndModelOmitted", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "A=1\n", string(EnvFile(nil, "", "", map[string]string{"A": "1"}, nil)))
		require.Equal(t, "\n", string(EnvFile(nil, "", "", nil, nil)))
	})
}

func TestGitCredentials(t *testing.T) {
	t.Parallel()

	require.Equal(t,
		"https://ghp_one:x-oauth-basic@github.com\nhttps://ghp_two:x-oauth-basic@github.com\n",
		string(GitCredentials([]string{"ghp_one", "", "ghp_two"})))
	require.Nil(t, GitCredentials(nil))
	require.Nil(t, GitCredentials([]string{"", ""}))
}
