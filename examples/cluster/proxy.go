package main

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/rocketqueue/sse/examples/internal/jobs"
)

// A proxy sends each request to the next replica that is up, as a load
// balancer does, and passes each event of a stream on at once. It answers
// GET /cluster and POST /cluster/{name}/{stop,start} itself.
type proxy struct {
	replicas  []*replica      // immutable
	transport *http.Transport // immutable
	mux       *http.ServeMux  // immutable
	next      atomic.Uint64   // the replica to try first, modulo len(replicas)

	mu      sync.Mutex
	streams map[string]int     // guarded by mu: event streams open, by replica
	serving map[jobs.ID]string // guarded by mu: the replica of each job's latest open stream (one job's, or several jobs')
}

func newProxy(replicas []*replica) *proxy {
	p := &proxy{
		replicas:  replicas,
		transport: &http.Transport{DisableCompression: true},
		mux:       http.NewServeMux(),
		streams:   make(map[string]int),
		serving:   make(map[jobs.ID]string),
	}
	p.mux.HandleFunc("GET /cluster", p.status)
	p.mux.HandleFunc("POST /cluster/{name}/{action}", p.control)
	p.mux.HandleFunc("/", p.forward)
	return p
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// forward passes r on to a replica that is up, the next one in turn first,
// trying each once: a replica that cannot be reached is skipped. With none
// up, an event stream is told to retry in a second (an EventSource gives
// up on an error status), anything else gets 503.
func (p *proxy) forward(w http.ResponseWriter, r *http.Request) {
	first := p.next.Add(1)
	for i := range uint64(len(p.replicas)) {
		rep := p.replicas[(first+i)%uint64(len(p.replicas))]
		if addr, up := rep.address(); up && p.try(w, r, rep, addr) {
			return
		}
	}
	if _, ok := eventStream(r); ok {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "retry: 1000\n") // no blank line: see docs/protocol.md
		return
	}
	http.Error(w, "no replica is up", http.StatusServiceUnavailable)
}

// try passes r on to rep at addr. It returns false, having written
// nothing, if rep could not be reached.
func (p *proxy) try(w http.ResponseWriter, r *http.Request, rep *replica, addr string) bool {
	unreachable := false
	ids, stream := eventStream(r)
	opened := false
	defer func() {
		if opened {
			p.track(rep.name, ids, false)
		}
	}()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: addr})
			pr.Out.Host = pr.In.Host
		},
		Transport:     p.transport,
		FlushInterval: -1, // each event at once
		ModifyResponse: func(res *http.Response) error {
			if stream && res.StatusCode == http.StatusOK {
				opened = true
				p.track(rep.name, ids, true)
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if opErr := (*net.OpError)(nil); errors.As(err, &opErr) && opErr.Op == "dial" {
				unreachable = true
				return
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
	return !unreachable
}

// eventStream tells whether r asks for an event stream, and of which jobs:
// one job's (/jobs/{id}/events) or several jobs' (/jobs/events?job={id}…).
func eventStream(r *http.Request) ([]jobs.ID, bool) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/jobs/")
	if r.Method != http.MethodGet || !ok {
		return nil, false
	}
	if rest == "events" {
		ids, err := jobs.List(r)
		return ids, err == nil && len(ids) > 0
	}
	id, ok := strings.CutSuffix(rest, "/events")
	if !ok {
		return nil, false
	}
	job, ok := jobs.ParseID(id)
	return []jobs.ID{job}, ok
}

// track counts a stream of jobs ids that opened or ended on replica name.
func (p *proxy) track(name string, ids []jobs.ID, open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if open {
		p.streams[name]++
		for _, id := range ids {
			p.serving[id] = name
		}
		return
	}
	p.streams[name]--
	for _, id := range ids {
		if p.serving[id] == name {
			delete(p.serving, id)
		}
	}
}

// replicaState is a replica as GET /cluster shows it.
type replicaState struct {
	Name    string `json:"name"`
	Up      bool   `json:"up"`
	Streams int    `json:"streams"` // event streams open through the proxy
}

// status handles GET /cluster: the replicas, and the replica that serves
// each job's latest open stream, by job ID.
func (p *proxy) status(w http.ResponseWriter, _ *http.Request) {
	var state struct {
		Replicas []replicaState    `json:"replicas"`
		Streams  map[string]string `json:"streams"`
	}
	state.Streams = make(map[string]string)
	for _, rep := range p.replicas {
		_, up := rep.address()
		state.Replicas = append(state.Replicas, replicaState{Name: rep.name, Up: up})
	}
	p.mu.Lock()
	for i := range state.Replicas {
		state.Replicas[i].Streams = p.streams[state.Replicas[i].Name]
	}
	for id, name := range p.serving {
		state.Streams[id.String()] = name
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(state)
}

// control handles POST /cluster/{name}/stop, which stops a replica as a
// crash would, and POST /cluster/{name}/start.
func (p *proxy) control(w http.ResponseWriter, r *http.Request) {
	var rep *replica
	for _, c := range p.replicas {
		if c.name == r.PathValue("name") {
			rep = c
		}
	}
	switch action := r.PathValue("action"); {
	case rep == nil:
		http.Error(w, "no such replica", http.StatusNotFound)
	case action == "stop":
		rep.crash()
		w.WriteHeader(http.StatusNoContent)
	case action == "start":
		if err := rep.start(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "the action is stop or start", http.StatusNotFound)
	}
}
