package sse

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Frame is one parsed SSE frame: the lines up to a blank line.
type Frame struct {
	// ID is the value of the "id:" line, "" when there is none.
	ID string
	// Event is the value of an "event:" line; aod never sends one.
	Event string
	// Data is the "data:" value; several data lines are joined by "\n".
	Data string
	// Comment is the text after ':' (and one space) of comment lines such
	// as ": heartbeat"; several are joined by "\n".
	Comment string
}

// ReadEvent reads the next frame from r, following the SSE line rules: a
// field's value starts after "name:" and one optional space, lines end in
// "\n" or "\r\n", unknown fields are ignored, and blank lines before a frame
// are skipped. It returns io.EOF when r ends between frames and
// io.ErrUnexpectedEOF when it ends inside one.
func ReadEvent(r *bufio.Reader) (Frame, error) {
	var (
		f       Frame
		started bool
		data    []string
		comment []string
	)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			if err == io.EOF && (started || line != "") {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if line == "" {
			if !started {
				continue
			}
			f.Data = strings.Join(data, "\n")
			f.Comment = strings.Join(comment, "\n")
			return f, nil
		}
		started = true
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "":
			comment = append(comment, value)
		case "data":
			data = append(data, value)
		case "event":
			f.Event = value
		case "id":
			f.ID = value
		}
	}
}

// DecodeData decodes f.Data, which must be exactly one JSON object. Numbers
// decode as float64, as encoding/json does into an any.
func DecodeData(f Frame) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(f.Data))
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("sse: decoding data %q: %w", f.Data, err)
	}
	if m == nil {
		return nil, fmt.Errorf("sse: data %q is not a JSON object", f.Data)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("sse: data %q has trailing text", f.Data)
	}
	return m, nil
}
