package sprites

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultBaseURL is the Sprites API endpoint.
const DefaultBaseURL = "https://api.sprites.dev"

// DefaultHome is the working directory used when an ExecRequest has no Dir.
const DefaultHome = "/home/sprite"

// RetryPolicy bounds the retries of REST calls answered with 429 or 5xx.
type RetryPolicy struct {
	// MaxAttempts is the total number of attempts, the first included.
	MaxAttempts int
	// MaxWait caps the sum of all delays; a retry that would exceed it is not
	// made and the last error is returned.
	MaxWait time.Duration
	// BaseDelay is the first backoff delay when the server gives no
	// Retry-After; it doubles per attempt up to MaxDelay, with jitter.
	BaseDelay time.Duration
	// MaxDelay caps one delay, Retry-After included.
	MaxDelay time.Duration
}

// DefaultRetryPolicy is used unless WithRetryPolicy says otherwise.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 5, MaxWait: 90 * time.Second, BaseDelay: 500 * time.Millisecond, MaxDelay: 30 * time.Second}

// Client is a [Backend] speaking the Sprites REST and exec-WebSocket API.
// It is safe for concurrent use.
type Client struct {
	baseURL *url.URL
	token   string
	http    *http.Client
	logger  *slog.Logger

	retry          RetryPolicy
	sleep          func(ctx context.Context, d time.Duration) error
	requestTimeout time.Duration

	pingInterval   time.Duration
	pongTimeout    time.Duration
	reattachTries  int
	reattachDelay  time.Duration
	maxRunAfterDis time.Duration
	wsReadLimit    int64
}

var _ Backend = (*Client)(nil)

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithHTTPClient sets the HTTP client for REST calls and WebSocket dials.
// Its Timeout must be zero (WebSockets are long-lived); use
// WithRequestTimeout for REST calls.
func WithHTTPClient(hc *http.Client) ClientOption { return func(c *Client) { c.http = hc } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) ClientOption { return func(c *Client) { c.logger = l } }

// WithRetryPolicy sets the REST retry policy.
func WithRetryPolicy(p RetryPolicy) ClientOption { return func(c *Client) { c.retry = p } }

// WithSleep replaces the function that waits between retries and
// re-attaches (tests use it to record delays without waiting). It must
// return ctx.Err() if ctx ends first.
func WithSleep(sleep func(ctx context.Context, d time.Duration) error) ClientOption {
	return func(c *Client) { c.sleep = sleep }
}

// WithRequestTimeout bounds each REST request (default 2 minutes; 0 means no
// bound beyond the caller's context).
func WithRequestTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.requestTimeout = d }
}

// WithKeepalive sets the exec WebSocket ping interval and how long to wait
// for a pong before treating the connection as dead (default 15 s and 45 s).
func WithKeepalive(interval, timeout time.Duration) ClientOption {
	return func(c *Client) { c.pingInterval, c.pongTimeout = interval, timeout }
}

// WithReattach sets how many times in a row a lost exec stream is
// re-attached before Next gives up with ErrTransportLost, and the delay
// before the first try (doubling after each failure). Defaults: 6 and
// 200 ms. The count resets whenever new output arrives.
func WithReattach(tries int, delay time.Duration) ClientOption {
	return func(c *Client) { c.reattachTries, c.reattachDelay = tries, delay }
}

// WithMaxRunAfterDisconnect sets how long the service keeps a command
// running after its exec WebSocket disconnects (default 24 h).
func WithMaxRunAfterDisconnect(d time.Duration) ClientOption {
	return func(c *Client) { c.maxRunAfterDis = d }
}

// NewClient returns a Client for the API at baseURL (empty means
// DefaultBaseURL) authenticating with token.
func NewClient(baseURL, token string, opts ...ClientOption) *Client {
	u, err := url.Parse(strings.TrimRight(cmp.Or(baseURL, DefaultBaseURL), "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		u = &url.URL{Scheme: "https", Host: "invalid.invalid", Path: "/bad-base-url"}
	}
	c := &Client{
		baseURL:        u,
		token:          token,
		http:           &http.Client{},
		logger:         slog.Default(),
		retry:          DefaultRetryPolicy,
		sleep:          sleepCtx,
		requestTimeout: 2 * time.Minute,
		pingInterval:   15 * time.Second,
		pongTimeout:    45 * time.Second,
		reattachTries:  6,
		reattachDelay:  200 * time.Millisecond,
		maxRunAfterDis: 24 * time.Hour,
		wsReadLimit:    64 << 20,
	}
	for _, o := range opts {
		o(c)
	}
	c.retry.MaxAttempts = max(c.retry.MaxAttempts, 1)
	return c
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Check reports an error when no token is configured.
func (c *Client) Check(ctx context.Context) error {
	if c.token == "" {
		return errors.New("SPRITES_API_KEY is not set: set it to a Sprites API token (sprites.dev/account), or use AOD_SANDBOX=local")
	}
	return nil
}

// spriteObject is the service's sprite JSON.
type spriteObject struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Status string `json:"status"`
	URL    string `json:"url"`
}

func (o spriteObject) info() *Info {
	return &Info{ID: o.ID, Name: o.Name, Status: o.Status, URL: o.URL}
}

// Create creates a sprite (POST /v1/sprites, 201). 429 and 5xx answers are
// retried per the RetryPolicy, honouring Retry-After.
func (c *Client) Create(ctx context.Context, name string) (*Info, error) {
	body, _ := json.Marshal(map[string]any{"name": name})
	var obj spriteObject
	if err := c.doJSON(ctx, http.MethodPost, "/v1/sprites", nil, body, []int{http.StatusCreated}, &obj); err != nil {
		return nil, err
	}
	return obj.info(), nil
}

// Get returns the sprite, or an error matching ErrNotFound.
func (c *Client) Get(ctx context.Context, name string) (*Info, error) {
	var obj spriteObject
	if err := c.doJSON(ctx, http.MethodGet, spritePath(name), nil, nil, []int{http.StatusOK}, &obj); err != nil {
		return nil, err
	}
	return obj.info(), nil
}

// Delete destroys the sprite (204 or 200).
func (c *Client) Delete(ctx context.Context, name string) error {
	_, err := c.do(ctx, http.MethodDelete, spritePath(name), nil, nil, "", []int{http.StatusNoContent, http.StatusOK})
	return err
}

// WriteFile writes data to path inside the sprite (PUT fs/write), creating
// parent directories.
func (c *Client) WriteFile(ctx context.Context, name, path string, data []byte, mode fs.FileMode) error {
	q := url.Values{
		"path": {path}, "workingDir": {"/"}, "mode": {fileMode(mode)},
		"mkdir": {"true"}, "mkdirParents": {"true"},
	}
	if data == nil {
		data = []byte{}
	}
	_, err := c.do(ctx, http.MethodPut, spritePath(name)+"/fs/write", q, data, "application/octet-stream", []int{http.StatusOK, http.StatusCreated, http.StatusNoContent})
	return err
}

// Chmod changes the mode of path inside the sprite (POST fs/chmod).
func (c *Client) Chmod(ctx context.Context, name, path string, mode fs.FileMode) error {
	body, _ := json.Marshal(map[string]string{"path": path, "workingDir": "/", "mode": fileMode(mode)})
	_, err := c.do(ctx, http.MethodPost, spritePath(name)+"/fs/chmod", nil, body, "application/json", []int{http.StatusOK, http.StatusNoContent})
	return err
}

// SetNetworkPolicy replaces the sprite's egress policy (200 or 204).
func (c *Client) SetNetworkPolicy(ctx context.Context, name string, policy NetworkPolicy) error {
	if policy.Rules == nil {
		policy.Rules = []Rule{}
	}
	body, err := json.Marshal(policy)
	if err != nil {
		return fmt.Errorf("sprites: encode policy: %w", err)
	}
	_, err = c.do(ctx, http.MethodPost, spritePath(name)+"/policy/network", nil, body, "application/json", []int{http.StatusOK, http.StatusNoContent})
	return err
}

// Kill sends signal to the exec (POST exec/{id}/kill, timeout 0s) and waits
// for the NDJSON answer to end. 410 (already exited) counts as success.
func (c *Client) Kill(ctx context.Context, name, execID, signal string) error {
	sig := strings.TrimPrefix(strings.ToUpper(cmp.Or(signal, "TERM")), "SIG")
	q := url.Values{"signal": {sig}, "timeout": {"0s"}}
	body, err := c.do(ctx, http.MethodPost, spritePath(name)+"/exec/"+url.PathEscape(execID)+"/kill", q, nil, "", []int{http.StatusOK, http.StatusNoContent, http.StatusGone})
	if err != nil {
		return err
	}
	for line := range bytes.SplitSeq(body, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var ev struct {
			Type    string `json:"type"`
			Message string `json:"message"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(line, &ev) == nil && ev.Type == "error" {
			return fmt.Errorf("sprites: kill %s %s: %s", name, execID, cmp.Or(ev.Message, ev.Error, "error"))
		}
	}
	return nil
}

func spritePath(name string) string { return "/v1/sprites/" + url.PathEscape(name) }

func fileMode(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m.Perm())) }

func (c *Client) url(path string, q url.Values) string {
	u := *c.baseURL
	u.Path = strings.TrimRight(u.Path, "/") + path
	u.RawPath = ""
	if q != nil {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, body []byte, ok []int, out any) error {
	ct := ""
	if body != nil {
		ct = "application/json"
	}
	resp, err := c.do(ctx, method, path, q, body, ct, ok)
	if err != nil {
		return err
	}
	if out != nil && len(bytes.TrimSpace(resp)) > 0 {
		if err := json.Unmarshal(resp, out); err != nil {
			return fmt.Errorf("sprites: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// do performs a REST call with retries on 429/5xx and returns the body of a
// successful answer.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body []byte, contentType string, ok []int) ([]byte, error) {
	op := method + " " + path
	var waited time.Duration
	for attempt := 1; ; attempt++ {
		respBody, err := c.once(ctx, method, path, q, body, contentType, ok)
		if err == nil {
			return respBody, nil
		}
		var apiErr *Error
		if !errors.As(err, &apiErr) || !apiErr.Temporary() || attempt >= c.retry.MaxAttempts {
			return nil, err
		}
		d := c.backoff(attempt, apiErr.RetryAfter)
		if waited+d > c.retry.MaxWait {
			return nil, err
		}
		waited += d
		c.logger.DebugContext(ctx, "sprites: retrying", "op", op, "status", apiErr.Status, "attempt", attempt, "delay", d)
		if serr := c.sleep(ctx, d); serr != nil {
			return nil, errors.Join(err, serr)
		}
	}
}

// backoff is the delay before retry number attempt (1-based).
func (c *Client) backoff(attempt int, retryAfter time.Duration) time.Duration {
	maxD := cmp.Or(c.retry.MaxDelay, 30*time.Second)
	if retryAfter > 0 {
		return min(retryAfter, maxD)
	}
	d := cmp.Or(c.retry.BaseDelay, 500*time.Millisecond) << min(attempt-1, 20)
	d = min(d, maxD)
	// Up to 20% jitter, downwards so the cap holds.
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

func (c *Client) once(ctx context.Context, method, path string, q url.Values, body []byte, contentType string, ok []int) ([]byte, error) {
	op := method + " " + path
	if c.requestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.requestTimeout)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), rd)
	if err != nil {
		return nil, fmt.Errorf("sprites: %s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sprites: %s: %w", op, err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	for _, s := range ok {
		if resp.StatusCode == s {
			if err != nil {
				return nil, fmt.Errorf("sprites: %s: read answer: %w", op, err)
			}
			return respBody, nil
		}
	}
	e := parseErrorBody(resp.StatusCode, resp.Header, respBody)
	e.Op = op
	return nil, e
}
