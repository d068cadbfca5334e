package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// HTTPResult is a raw API answer, for tests that assert on status codes,
// error codes and headers rather than going through client/.
type HTTPResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body into v.
func (r *HTTPResult) JSON(v any) error { return json.Unmarshal(r.Body, v) }

// Code returns the error code of an error answer, "" otherwise.
func (r *HTTPResult) Code() string {
	var eb struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &eb)
	return eb.Error.Code
}

func (r *HTTPResult) String() string {
	return fmt.Sprintf("%d %s", r.Status, bytes.TrimSpace(r.Body))
}

var testHTTP = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// Do sends one request to a node. body may be nil, a string or a value to
// encode as JSON.
func Do(ctx context.Context, method, addr, path string, body any) (*HTTPResult, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(j)
	}
	req, err := newRequest(ctx, method, addr, path, rd)
	if err != nil {
		return nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return doRequest(req)
}

// KVPath is the API path of key, escaped so '/' survives.
func KVPath(key string) string { return "/v1/kv/" + url.PathEscape(key) }

func newRequest(ctx context.Context, method, addr, path string, body io.Reader) (*http.Request, error) {
	return http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
}

// newRawPut builds a binary-value put (Content-Type application/octet-stream).
func newRawPut(ctx context.Context, addr, path string, value []byte) (*http.Request, error) {
	req, err := newRequest(ctx, "PUT", addr, path, bytes.NewReader(value))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	return req, nil
}

func doRequest(req *http.Request) (*HTTPResult, error) {
	resp, err := testHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &HTTPResult{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// ScanKeys pages through GET /v1/kv?QUERY&limit=LIMIT&start=..., following
// "next" until "more" is false (at most 1000 pages), asking addr(page) for
// each page, and returns the keys in the order received.
func ScanKeys(t testing.TB, ctx context.Context, addr func(page int) string, query string, limit int) []string {
	t.Helper()
	var keys []string
	next := ""
	for page := 0; page < 1000; page++ {
		res, err := Do(ctx, "GET", addr(page), fmt.Sprintf("/v1/kv?%s&limit=%d&start=%s", query, limit, url.QueryEscape(next)), nil)
		if err != nil || res.Status != 200 {
			t.Fatalf("scan page %d: %v %v", page, res, err)
		}
		for _, h := range []string{"X-Cairn-Shard", "X-Cairn-Index", "X-Cairn-Session"} {
			if res.Header.Get(h) == "" {
				t.Fatalf("scan page %d lacks header %s", page, h)
			}
		}
		var sr struct {
			KVs []struct {
				Key string `json:"key"`
			} `json:"kvs"`
			More bool   `json:"more"`
			Next string `json:"next"`
		}
		if err := res.JSON(&sr); err != nil {
			t.Fatalf("scan page %d: %v", page, err)
		}
		for _, kv := range sr.KVs {
			keys = append(keys, kv.Key)
		}
		if !sr.More {
			return keys
		}
		next = sr.Next
	}
	t.Fatalf("scan did not end within 1000 pages")
	return nil
}
