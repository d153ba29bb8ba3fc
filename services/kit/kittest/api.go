package kittest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// Send sends method url with header and body and returns the response
// (body already read and closed) and the body decoded as a JSON object. A
// body that is not JSON fails the test: every answer of a Meshop API is.
func Send(t testing.TB, method, url string, header map[string]string, body string) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%s %s: body is not a JSON object: %q", method, url, raw)
	}
	return resp, got
}

// ErrorOf returns the code and details of an error body
// {"error":{"code":...,"details":{...}}}; "" and nil for any other body.
func ErrorOf(body map[string]any) (code string, details map[string]any) {
	e, _ := body["error"].(map[string]any)
	code, _ = e["code"].(string)
	details, _ = e["details"].(map[string]any)
	return code, details
}
