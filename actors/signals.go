package actors

import "github.com/aodhq/aod/internal/testsignal"

// TestSignals tell tests what the manager's actors did, so they wait on an
// event instead of polling. The zero value is a no-op; a test calls Init
// right after NewManager.
type TestSignals struct {
	// ActorRetired carries the id of a session whose actor (and its log
	// writer) has gone.
	ActorRetired testsignal.TestSignal[string]
	// BatchAbandoned carries the error of a log batch the writer could not
	// commit (the session's work then stops until it is resumed).
	BatchAbandoned testsignal.TestSignal[error]
	// PanicRecorded carries the id of a session whose actor panicked, once
	// the failure is recorded (or could not be).
	PanicRecorded testsignal.TestSignal[string]
	// SubscriberGone carries the id of a session whose actor removed an
	// unsubscribed live subscriber.
	SubscriberGone testsignal.TestSignal[string]
}

// Init arms every signal for tb.
func (s *TestSignals) Init(tb testsignal.TB) {
	s.ActorRetired.Init(tb)
	s.BatchAbandoned.Init(tb)
	s.PanicRecorded.Init(tb)
	s.SubscriberGone.Init(tb)
}
