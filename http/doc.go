// Package http is aod's REST + SSE API on Fiber v2. It keeps the original
// Agent on Demand contract exactly: paths without trailing slashes, bearer
// API keys with the four 401 messages, tenant scoping (another user's row is
// 404), the {"detail": ...} error envelope with pydantic-style 422 lists,
// 400 "Invalid JSON", and Django's two kinds of 405.
//
// Import it under an alias where net/http is also used (D23):
//
//	import aodhttp "github.com/aodhq/aod/http"
package http
