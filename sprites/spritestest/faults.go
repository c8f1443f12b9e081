package spritestest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Faults are the failures the fake injects. Counters are consumed as the
// faults fire. The JSON form is what POST /_fake/faults takes (and GET
// returns); it replaces the current faults. For example:
//
//	curl -H "Authorization: Bearer $T" -d '{"create_rate_limited":2,"retry_after_seconds":1}' $URL/_fake/faults
//	curl -H "Authorization: Bearer $T" -d '{"drop_execs":1,"drop_after_frames":3}' $URL/_fake/faults
//	curl -H "Authorization: Bearer $T" -d '{}' $URL/_fake/faults   # clear
type Faults struct {
	// CreateRateLimited answers the next N POST /v1/sprites with 429
	// (sprite_creation_rate_limited) and a Retry-After header.
	CreateRateLimited int `json:"create_rate_limited,omitempty"`
	// RetryAfterSeconds is the Retry-After of those answers (default 1).
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
	// ServerErrors answers the next N REST requests (not WebSocket upgrades,
	// not /_fake/) with ServerErrorStatus.
	ServerErrors int `json:"server_errors,omitempty"`
	// DeleteErrors answers the next N DELETE /v1/sprites/{name} with
	// ServerErrorStatus, leaving the sprite in place (a Sprites outage as
	// seen by the sandbox janitor).
	DeleteErrors int `json:"delete_errors,omitempty"`
	// ServerErrorStatus is the status of those answers (default 503).
	ServerErrorStatus int `json:"server_error_status,omitempty"`
	// DropExecs drops the next N exec or attach WebSockets, without an exit
	// frame, once DropAfterFrames output frames or DropAfterBytes output bytes
	// were sent on it (right after session_info when both are zero). The
	// command keeps running.
	DropExecs       int   `json:"drop_execs,omitempty"`
	DropAfterFrames int   `json:"drop_after_frames,omitempty"`
	DropAfterBytes  int64 `json:"drop_after_bytes,omitempty"`
	// HangRequests makes the next N REST requests that match HangMethod
	// (any method when empty), HangPathSuffix (a suffix of the URL path)
	// and HangFile (the "path" query parameter of fs calls, when set) hang
	// without an answer and without effect until their client goes away
	// (a black-holed call), so a test can kill aod inside a given call.
	HangRequests   int    `json:"hang_requests,omitempty"`
	HangMethod     string `json:"hang_method,omitempty"`
	HangPathSuffix string `json:"hang_path_suffix,omitempty"`
	HangFile       string `json:"hang_file,omitempty"`
	// FrameDelayMS delays every output frame by this many milliseconds.
	FrameDelayMS int `json:"frame_delay_ms,omitempty"`
	// NeverExit withholds the exit frame: streams stay open after the
	// command ends, until the client leaves.
	NeverExit bool `json:"never_exit,omitempty"`
}

// SetFaults replaces the injected faults.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the faults still pending.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// dropPlan says when to drop one exec connection.
type dropPlan struct {
	active bool
	frames int
	bytes  int64
}

func (d dropPlan) due(frames int, bytes int64) bool {
	if !d.active {
		return false
	}
	if d.frames == 0 && d.bytes == 0 {
		return true
	}
	return (d.frames > 0 && frames >= d.frames) || (d.bytes > 0 && bytes >= d.bytes)
}

// streamFaults are the faults that apply to one exec connection.
type streamFaults struct {
	drop       dropPlan
	frameDelay time.Duration
	neverExit  bool
}

func (s *Server) takeStreamFaults() streamFaults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &s.faults
	sf := streamFaults{frameDelay: time.Duration(f.FrameDelayMS) * time.Millisecond, neverExit: f.NeverExit}
	if f.DropExecs > 0 {
		f.DropExecs--
		sf.drop = dropPlan{active: true, frames: f.DropAfterFrames, bytes: f.DropAfterBytes}
	}
	return sf
}

// injectRESTFault answers r with an injected error, if one is due.
func (s *Server) injectRESTFault(w http.ResponseWriter, r *http.Request) bool {
	if isUpgrade(r) {
		return false
	}
	s.mu.Lock()
	f := &s.faults
	var status, retryAfter int
	hang := false
	switch {
	case f.HangRequests > 0 && (f.HangMethod == "" || f.HangMethod == r.Method) &&
		strings.HasSuffix(r.URL.Path, f.HangPathSuffix) && (f.HangFile == "" || f.HangFile == r.URL.Query().Get("path")):
		f.HangRequests--
		hang = true
	case r.Method == http.MethodPost && r.URL.Path == "/v1/sprites" && f.CreateRateLimited > 0:
		f.CreateRateLimited--
		status, retryAfter = http.StatusTooManyRequests, cmp.Or(f.RetryAfterSeconds, 1)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v1/sprites/") &&
		strings.Count(r.URL.Path, "/") == 3 && f.DeleteErrors > 0:
		f.DeleteErrors--
		status = cmp.Or(f.ServerErrorStatus, http.StatusServiceUnavailable)
	case f.ServerErrors > 0:
		f.ServerErrors--
		status = cmp.Or(f.ServerErrorStatus, http.StatusServiceUnavailable)
	}
	s.mu.Unlock()
	if hang {
		select {
		case <-r.Context().Done():
		case <-s.ctx.Done():
		}
		return true
	}
	switch {
	case status == http.StatusTooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		w.Header().Set("X-RateLimit-Limit", "10")
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Duration(retryAfter)*time.Second).Unix(), 10))
		writeError(w, status, "sprite_creation_rate_limited", "sprite creation rate limit exceeded (injected)", map[string]any{
			"limit": 10, "window_seconds": 60, "retry_after_seconds": retryAfter, "current_count": 11,
		})
		return true
	case status != 0:
		writeError(w, status, "internal_error", fmt.Sprintf("injected HTTP %d", status), nil)
		return true
	}
	return false
}

func (s *Server) handleGetFaults(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Faults())
}

func (s *Server) handleSetFaults(w http.ResponseWriter, r *http.Request) {
	var f Faults
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "bad faults JSON: "+err.Error(), nil)
		return
	}
	s.SetFaults(f)
	writeJSON(w, http.StatusOK, f)
}

func (s *Server) handleRequests(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"requests": s.Requests()})
}
