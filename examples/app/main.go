// Command c19-example-app is a small app that keeps its state in c19: it runs next to the c19
// agent sidecar, which answers on localhost:3097, and talks to it with plain HTTP and JSON.
//
// What it shows:
//
//   - The app needs no client library: a write is a PUT of {"key": {"value": ...}}, a read is a
//     GET of /<key> answered with {"value": ..., "ts": ..., "ttl": ...}, a miss is a 404.
//   - The agent is up before the app starts (the operator runs it as a native sidecar with a
//     startup probe), so the app's first request needs no retry loop. This app checks that: it
//     logs its first request and exits non-zero if it failed, which shows as a restart.
//   - Every pod of the group sees what any pod wrote, a moment later: the agents gossip.
//
// Endpoints on :8080 (PORT):
//
//	GET /hello/<name>  greets <name> and names the previous visitor, whichever pod greeted them
//	PUT /kv/<key>      stores the request body (JSON) as the key's value: 204 once the agent
//	                   has applied it, which is what an app's own handlers would answer
//	GET /kv/<key>      the key's value as this pod's agent holds it, or 404
//	GET /healthz       200 while the process runs
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// agent is the app API of the c19 sidecar in the same pod.
var agent = envOr("C19_AGENT", "http://localhost:3097")

var client = &http.Client{Timeout: 2 * time.Second}

// entry is how the agent renders a key: its value, the write's timestamp (ms since the epoch)
// and its time to live in ms (null: forever).
type entry struct {
	Value json.RawMessage `json:"value"`
	TS    uint64          `json:"ts"`
	TTL   *uint64         `json:"ttl"`
}

// errMissing is a 404 from the agent: the key was never written, was deleted or expired.
var errMissing = errors.New("missing")

// get reads one key from the agent.
func get(key string) (entry, error) {
	var e entry
	resp, err := client.Get(agent + "/" + url.PathEscape(key))
	if err != nil {
		return e, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return e, json.NewDecoder(resp.Body).Decode(&e)
	case http.StatusNotFound:
		return e, errMissing
	default:
		return e, fmt.Errorf("GET %s: %s", key, resp.Status)
	}
}

// put writes keys in one request. The agent has applied the write when it answers 204: a read on
// this pod sees it at once, and the agent pushes it to its peers.
func put(values map[string]any) error {
	body := map[string]map[string]any{}
	for k, v := range values {
		body[k] = map[string]any{"value": v}
	}
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPut, agent+"/", bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		var reason struct {
			Error string `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&reason)
		return fmt.Errorf("PUT: %s %s", resp.Status, reason.Error)
	}
	return nil
}

type visit struct {
	Name string `json:"name"`
	Pod  string `json:"pod"`
}

func hello(pod string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/hello/")
		if name == "" {
			http.Error(w, "usage: /hello/<name>", http.StatusBadRequest)
			return
		}
		before := "nobody"
		switch e, err := get("last-visitor"); {
		case err == nil:
			var v visit
			if json.Unmarshal(e.Value, &v) == nil {
				before = fmt.Sprintf("%s (greeted by %s)", v.Name, v.Pod)
			}
		case errors.Is(err, errMissing):
		default:
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		if err := put(map[string]any{"last-visitor": visit{Name: name, Pod: pod}}); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		fmt.Fprintf(w, "hello %s from %s; before you: %s\n", name, pod, before)
	}
}

// kv reads and writes single keys through the agent, as an app's handlers would.
func kv(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/kv/")
	if key == "" {
		http.Error(w, "usage: /kv/<key>", http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet:
		e, err := get(key)
		switch {
		case errors.Is(err, errMissing):
			http.Error(w, "missing", http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadGateway)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Write(e.Value)
		}
	case http.MethodPut:
		var value json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&value); err != nil {
			http.Error(w, "the body must be JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := put(map[string]any{key: value}); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "GET or PUT", http.StatusMethodNotAllowed)
	}
}

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stdout, nil))
	pod, _ := os.Hostname()

	// The first request: the sidecar must already answer. Record when this pod started.
	start := time.Now()
	err := put(map[string]any{"started/" + pod: start.UnixMilli()})
	if err != nil {
		log.Error("first request to the agent failed", "agent", agent, "err", err.Error())
		os.Exit(1)
	}
	log.Info("first request to the agent succeeded", "agent", agent, "ms", time.Since(start).Milliseconds())

	mux := http.NewServeMux()
	mux.HandleFunc("/hello/", hello(pod))
	mux.HandleFunc("/kv/", kv)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	addr := ":" + envOr("PORT", "8080")
	log.Info("serving", "addr", addr)
	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	// On SIGTERM (the pod is terminating): stop taking requests and finish those in flight. Their
	// writes were acknowledged by the agent, which pushes them on at once (its preStop hook) and
	// keeps running until this container has exited. Do not write after this point.
	stop, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		<-stop.Done()
		log.Info("terminating: finishing requests in flight")
		ctx, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		server.Shutdown(ctx)
	}()
	if err := server.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "err", err.Error())
		os.Exit(1)
	}
	<-drained
	log.Info("stopped")
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
