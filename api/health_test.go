package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairndb/cairn/shard"
)

// failedLogBackend is a node whose raft log failed.
type failedLogBackend struct{ notReadyBackend }

func (failedLogBackend) Health() error {
	return fmt.Errorf("%w: wal commit: input/output error", shard.ErrLogFailed)
}

// Invariant I1: a node whose raft log failed fails /readyz with the cause,
// and /healthz (200 while the process serves) says ok false and why.
func TestHealthReportsFailedLog(t *testing.T) {
	s := NewServer(Config{Backend: failedLogBackend{notReadyBackend{t}}})
	defer s.Close()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if detail := decodeEnvelope(t, w.Body.Bytes()); w.Code != http.StatusServiceUnavailable ||
		!strings.Contains(fmt.Sprint(detail["message"]), "log failed") {
		t.Errorf("readyz %d %s; want 503 saying the log failed", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var body struct {
		OK    bool   `json:"ok"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusOK || body.OK ||
		!strings.Contains(body.Error, "log failed") {
		t.Errorf("healthz %d %s (%v); want 200, ok false and the cause", w.Code, w.Body, err)
	}
}
