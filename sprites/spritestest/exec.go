package spritestest

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/aodhq/aod/sprites"
	"github.com/aodhq/aod/sprites/runner"
)

// execMeta is what the fake stores per exec, for GET /exec and attach.
type execMeta struct {
	ID      string   `json:"id"`
	Command string   `json:"command"`
	Argv    []string `json:"argv"`
	Workdir string   `json:"workdir"`
	Created int64    `json:"created"`
	TTY     bool     `json:"tty"`
}

func (s *Server) execMetaDir(name string) string { return filepath.Join(s.metaDir, name+".execs") }

func (s *Server) writeExecMeta(name string, m execMeta) error {
	d := s.execMetaDir(name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return err
	}
	b, _ := json.Marshal(m)
	return os.WriteFile(filepath.Join(d, m.ID+".json"), b, 0o600)
}

func (s *Server) readExecMeta(name, id string) execMeta {
	var m execMeta
	if b, err := os.ReadFile(filepath.Join(s.execMetaDir(name), filepath.Base(id)+".json")); err == nil {
		_ = json.Unmarshal(b, &m)
	}
	m.ID = id
	return m
}

// handleExecRoot serves GET/HEAD /v1/sprites/{name}/exec: HEAD answers the
// version probe, an upgrade starts an exec, a plain GET lists sessions.
func (s *Server) handleExecRoot(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	switch {
	case r.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK)
	case isUpgrade(r):
		s.handleExec(w, r, m)
	default:
		s.handleSessions(w, r, m)
	}
}

func (s *Server) handleSessions(w http.ResponseWriter, _ *http.Request, m spriteMeta) {
	ents, _ := os.ReadDir(s.execMetaDir(m.Name))
	sessions := []map[string]any{}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		p, err := s.Runner.Open(m.Name, id)
		if err != nil {
			continue
		}
		em := s.readExecMeta(m.Name, id)
		_, exited := p.Exit()
		sessions = append(sessions, map[string]any{
			"id": id, "command": em.Command, "workdir": em.Workdir,
			"created": time.Unix(em.Created, 0).UTC().Format(time.RFC3339), "bytes_per_second": 0,
			"is_active": !exited, "last_activity": time.Unix(em.Created, 0).UTC().Format(time.RFC3339), "tty": em.TTY,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
}

func parseBool(s string, def bool) bool {
	if b, err := strconv.ParseBool(s); err == nil {
		return b
	}
	return def
}

// handleExec starts a command: WSS /v1/sprites/{name}/exec?cmd=…
func (s *Server) handleExec(w http.ResponseWriter, r *http.Request, m spriteMeta) {
	q := r.URL.Query()
	argv := q["cmd"]
	if len(argv) == 0 {
		writeError(w, http.StatusBadRequest, "invalid_request", "cmd is required", nil)
		return
	}
	if p := q.Get("path"); p != "" && p != argv[0] {
		argv = append([]string{p}, argv[1:]...)
	}
	tty := parseBool(q.Get("tty"), false)
	wantStdin := parseBool(q.Get("stdin"), tty)
	mrad := 10 * time.Second
	if tty {
		mrad = 0
	}
	if v := q.Get("max_run_after_disconnect"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "invalid_request", "bad max_run_after_disconnect "+strconv.Quote(v), nil)
			return
		}
		mrad = d
	}
	// Any env= replaces the whole default environment (PATH and HOME too).
	var env []string
	for _, kv := range q["env"] {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			writeError(w, http.StatusBadRequest, "invalid_request", "bad env "+strconv.Quote(kv)+": want KEY=VALUE", nil)
			return
		}
		env = append(env, kv)
	}
	dir := cmp.Or(q.Get("dir"), sprites.DefaultHome)
	if !s.track() {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "server is closing", nil)
		return
	}
	defer s.wg.Done()

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	// Start before the upgrade so a failure is a plain HTTP error. With
	// stdin the command runs at once and reads the client's stdin frames
	// as they arrive (an interactive client sees session_info and output
	// before it sends EOF).
	p, err := s.Runner.Start(ctx, m.Name, runner.Spec{Argv: argv, Dir: dir, Env: env, Interactive: wantStdin})
	if err != nil {
		s.logger.Warn("spritestest: start exec", "sprite", m.Name, "argv", argv, "err", err)
		writeError(w, http.StatusInternalServerError, "exec_failed", "start: "+err.Error(), nil)
		return
	}
	stdin := p.Stdin()
	if stdin != nil {
		// Whatever happens to the connection, the command gets EOF.
		defer stdin.Close()
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept answered; a started command runs on, attachable.
	}
	conn.SetReadLimit(64 << 20)
	em := execMeta{ID: p.ID(), Command: argv[0], Argv: argv, Workdir: dir, Created: time.Now().Unix(), TTY: tty}
	if err := s.writeExecMeta(m.Name, em); err != nil {
		s.logger.Warn("spritestest: record exec", "err", err)
	}
	s.stream(ctx, conn, p, em, mrad, stdin)
}

// stdinWriteTimeout bounds one write to a command's stdin pipe (64 KiB of
// buffer): a command that reads none of its stdin for this long gets EOF.
const stdinWriteTimeout = 60 * time.Second

// forwardStdin writes one client message to the command's stdin. Non-TTY:
// a [0x00]+data frame is data, [0x04] is EOF. TTY: every binary message is
// raw input (no prefix; there is no EOF frame). Text messages (resize,
// signal, control:) are ignored. It returns false once stdin is closed.
func forwardStdin(stdin *os.File, tty bool, typ websocket.MessageType, msg []byte) bool {
	if typ != websocket.MessageBinary || len(msg) == 0 {
		return true
	}
	data := msg
	if !tty {
		switch msg[0] {
		case sprites.FrameStdin:
			data = msg[1:]
		case sprites.FrameStdinEOF:
			stdin.Close()
			return false
		default:
			return true
		}
	}
	_ = stdin.SetWriteDeadline(time.Now().Add(stdinWriteTimeout))
	if _, err := stdin.Write(data); err != nil {
		stdin.Close() // a command that stopped reading gets EOF
		return false
	}
	return true
}

// handleAttach re-attaches: WSS /v1/sprites/{name}/exec/{id}. The full
// scrollback is replayed from byte 0, then live output.
func (s *Server) handleAttach(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	p, err := s.Runner.Open(m.Name, id)
	if err != nil {
		writeError(w, http.StatusNotFound, "session_not_found", fmt.Sprintf("exec session %q not found", id), nil)
		return
	}
	if !isUpgrade(r) {
		writeError(w, http.StatusBadRequest, "invalid_request", "attach needs a WebSocket upgrade", nil)
		return
	}
	if !s.track() {
		writeError(w, http.StatusServiceUnavailable, "unavailable", "server is closing", nil)
		return
	}
	defer s.wg.Done()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	conn.SetReadLimit(64 << 20)
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	s.stream(ctx, conn, p, s.readExecMeta(m.Name, id), 0, nil)
}

var errDropped = errors.New("connection dropped (injected fault)")

// stream sends session_info, the output from byte 0 and the exit, then
// closes with 1000. Incoming messages go to stdin while it is open (see
// forwardStdin), and are discarded otherwise. When the client leaves before
// the exit and mrad > 0, the command is sent SIGTERM after mrad.
func (s *Server) stream(ctx context.Context, conn *websocket.Conn, p *runner.Proc, em execMeta, mrad time.Duration, stdin *os.File) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		open := stdin != nil
		for {
			typ, msg, err := conn.Read(ctx)
			if err != nil {
				cancel()
				return
			}
			if open {
				open = forwardStdin(stdin, em.TTY, typ, msg)
			}
		}
	}()
	faults := s.takeStreamFaults()
	info, _ := json.Marshal(map[string]any{
		"type": sprites.MessageSessionInfo, "session_id": p.ID(), "command": em.Command,
		"created": em.Created, "cols": 80, "rows": 24, "is_owner": true, "tty": em.TTY,
	})
	if err := conn.Write(ctx, websocket.MessageText, info); err != nil {
		conn.CloseNow()
		return
	}
	if faults.drop.due(0, 0) {
		conn.CloseNow()
		return
	}
	var frames int
	var sent int64
	var frameBuf []byte
	err := p.Watch(ctx, sprites.Offsets{}, func(ev sprites.Event) error {
		if ev.Exited {
			if faults.neverExit {
				<-ctx.Done()
				return ctx.Err()
			}
			if em.TTY {
				b, _ := json.Marshal(map[string]any{"type": sprites.MessageExit, "exit_code": ev.ExitCode})
				return conn.Write(ctx, websocket.MessageText, b)
			}
			return conn.Write(ctx, websocket.MessageBinary, sprites.EncodeExitFrame(ev.ExitCode))
		}
		if faults.frameDelay > 0 {
			t := time.NewTimer(faults.frameDelay)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
		msg := ev.Data
		if !em.TTY {
			// conn.Write is synchronous, so the frame buffer is reused.
			frameBuf = append(append(frameBuf[:0], byte(ev.Stream)), ev.Data...)
			msg = frameBuf
		}
		if err := conn.Write(ctx, websocket.MessageBinary, msg); err != nil {
			return err
		}
		frames++
		sent += int64(len(ev.Data))
		if faults.drop.due(frames, sent) {
			return errDropped
		}
		return nil
	})
	switch {
	case err == nil:
		_ = conn.Close(websocket.StatusNormalClosure, "")
	case errors.Is(err, errDropped):
		conn.CloseNow()
	default:
		conn.CloseNow()
		if s.ctx.Err() == nil && mrad > 0 {
			s.killAfter(p, mrad)
		}
	}
}

// killAfter ends a command whose client left, after its grace period,
// unless a client is attached again by then.
func (s *Server) killAfter(p *runner.Proc, d time.Duration) {
	if !s.track() {
		return
	}
	t := time.NewTimer(d)
	go func() {
		defer s.wg.Done()
		defer t.Stop()
		select {
		case <-s.ctx.Done():
		case <-t.C:
			if _, exited := p.Exit(); !exited {
				s.logger.Info("spritestest: exec outlived max_run_after_disconnect", "exec", p.ID())
				_ = p.Kill(syscall.SIGTERM)
			}
		}
	}()
}

var signals = map[string]syscall.Signal{
	"INT": syscall.SIGINT, "TERM": syscall.SIGTERM, "HUP": syscall.SIGHUP, "KILL": syscall.SIGKILL,
	"QUIT": syscall.SIGQUIT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

// handleKill serves POST /exec/{id}/kill?signal=TERM&timeout=10s with an
// NDJSON answer: signal, then exited (or timeout and killed), then complete.
// 410 when the command has already exited.
func (s *Server) handleKill(w http.ResponseWriter, r *http.Request) {
	m, ok := s.sprite(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	p, err := s.Runner.Open(m.Name, id)
	if err != nil {
		writeError(w, http.StatusNotFound, "session_not_found", fmt.Sprintf("exec session %q not found", id), nil)
		return
	}
	q := r.URL.Query()
	name := strings.TrimPrefix(strings.ToUpper(cmp.Or(q.Get("signal"), "TERM")), "SIG")
	sig, ok := signals[name]
	if !ok {
		writeError(w, http.StatusBadRequest, "invalid_signal", "unknown signal "+strconv.Quote(q.Get("signal")), nil)
		return
	}
	timeout := 10 * time.Second
	if v := q.Get("timeout"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil || timeout < 0 {
			writeError(w, http.StatusBadRequest, "invalid_request", "bad timeout "+strconv.Quote(v), nil)
			return
		}
	}
	if _, exited := p.Exit(); exited {
		writeError(w, http.StatusGone, "session_exited", "exec session has already exited", nil)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	emit := func(v map[string]any) {
		v["timestamp"] = time.Now().Unix()
		_ = enc.Encode(v)
		flush()
	}
	if err := p.Kill(sig); err != nil {
		emit(map[string]any{"type": "error", "error": err.Error()})
		emit(map[string]any{"type": "complete"})
		return
	}
	emit(map[string]any{"type": "signal", "signal": "SIG" + name, "message": "sent SIG" + name})
	// With timeout 0 there is no escalation, but still report a prompt exit.
	wait := timeout
	if wait == 0 {
		wait = 5 * time.Second
	}
	code, exited := waitExit(r.Context(), p, wait)
	if !exited && timeout > 0 {
		emit(map[string]any{"type": "timeout", "message": "process did not exit in " + timeout.String()})
		_ = p.Kill(syscall.SIGKILL)
		emit(map[string]any{"type": "killed", "signal": "SIGKILL"})
		code, exited = waitExit(r.Context(), p, 5*time.Second)
	}
	if exited {
		emit(map[string]any{"type": "exited", "exit_code": code})
	}
	emit(map[string]any{"type": "complete"})
}

// waitExit polls for the command's exit for up to d.
func waitExit(ctx context.Context, p *runner.Proc, d time.Duration) (int, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if code, exited := p.Exit(); exited {
			return code, true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-deadline.C:
			return 0, false
		case <-tick.C:
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
