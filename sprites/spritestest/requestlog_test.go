package spritestest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRequestLogIsBoundedAndRedacted (issue 9 defect 11): the request log
// keeps at most MaxLoggedRequests entries and MaxLoggedBodyBytes of bodies,
// and never keeps a file body (auth.json and other credentials).
func TestRequestLogIsBoundedAndRedacted(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{MaxLoggedRequests: 20, MaxLoggedBodyBytes: 300})
	tok := s.Token()
	resp, body := call(t, s, http.MethodPost, "/v1/sprites", tok, []byte(`{"name":"log-sprite"}`), "application/json")
	require.Equal(t, http.StatusCreated, resp.StatusCode, string(body))
	secret := `{"api_key":"sk-secret-value"}`
	resp, body = call(t, s, http.MethodPut, "/v1/sprites/log-sprite/fs/write?path=/home/sprite/.codex/auth.json&workingDir=/&mkdir=true&mkdirParents=true",
		tok, []byte(secret), "application/json")
	require.Less(t, resp.StatusCode, 300, string(body))
	for _, r := range s.Requests() {
		require.NotContains(t, string(r.Body), "sk-secret-value", "a file body is never logged")
	}
	// 100 bodies of ~60 bytes: the byte bound (300) is what binds.
	var last int
	for range 100 {
		resp, _ := call(t, s, http.MethodPost, "/v1/sprites/log-sprite/policy/network", tok,
			[]byte(`{"rules":[{"domain":"`+strings.Repeat("x", 30)+`.com","action":"allow"}]}`), "application/json")
		last = resp.StatusCode
	}
	reqs := s.Requests()
	require.LessOrEqual(t, len(reqs), 20)
	total := 0
	for _, r := range reqs {
		total += len(r.Body)
	}
	require.LessOrEqual(t, total, 300)
	require.NotEmpty(t, reqs[len(reqs)-1].Body, "the newest entries are kept")
	require.Equal(t, last, reqs[len(reqs)-1].Status, "statuses land on the right entry after a trim")
	// Without bodies the entry bound binds.
	for range 50 {
		call(t, s, http.MethodGet, "/v1/sprites/log-sprite", tok, nil, "")
	}
	require.Len(t, s.Requests(), 20)
}

// TestTokenMustMatchExactly: a prefix or an extension of the token is
// refused (the comparison is constant-time over the whole header).
func TestTokenMustMatchExactly(t *testing.T) {
	t.Parallel()
	s := NewServer(t, Options{})
	tok := s.Token()
	for _, bad := range []string{tok[:len(tok)-1], tok + "x", strings.ToUpper(tok), ""} {
		resp, _ := call(t, s, http.MethodGet, "/v1/sprites", bad, nil, "")
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "token %q", bad)
	}
	resp, _ := call(t, s, http.MethodGet, "/v1/sprites", tok, nil, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
