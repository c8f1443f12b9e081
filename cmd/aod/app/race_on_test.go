//go:build race

package app

// raceDetector reports a -race build: heavy tests scale down under it.
const raceDetector = true
