// Package sse writes and reads the Server-Sent Events of
// GET /sessions/{id}/stream exactly as the Python service framed them
// (reference/aod-api.md §5, decisions D8 and D9).
//
// A frame is an optional "id: N" line followed by one "data: {json}" line
// and a blank line; there are no "event:" lines. The JSON text is Python's
// json.dumps with default arguments: ", " and ": " separators, keys in a fixed
// order per event type, and every character outside printable ASCII escaped
// as \uXXXX with lowercase hex (astral characters as surrogate pairs).
//
// Writing is allocation-free append style (AppendEvent, AppendHeartbeat and
// the JSON helpers AppendString, AppendInt, AppendBool, AppendNull and
// AppendKey). A stream encodes each event once and shares the bytes with
// every subscriber. ReadEvent and DecodeData parse a stream back, for tests
// and Go clients.
package sse
