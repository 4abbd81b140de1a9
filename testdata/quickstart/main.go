//readme:program

// Command quickstart is a whole server and client in one program: it serves
// jobs' events over Server-Sent Events from an in-process broker, starts a
// job, and follows it with the Go client until the job ends.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/sseclient"
)

// JobID names the queue of one job.
type JobID string

func main() {
	events := sse.New[JobID]() // Queue mode: each event is read once
	var lastJob atomic.Int64

	mux := http.NewServeMux()
	// POST /jobs starts a job and answers with the URL of its events.
	mux.HandleFunc("POST /jobs", func(w http.ResponseWriter, r *http.Request) {
		job := JobID(strconv.FormatInt(lastJob.Add(1), 10))
		// Create the job's key before handing out its URL: the events
		// handler serves only known keys, and the job may not have
		// published anything yet when the client asks.
		if err := events.Open(r.Context(), job); err != nil {
			http.Error(w, "cannot start a job now", http.StatusServiceUnavailable)
			return
		}
		go runJob(context.WithoutCancel(r.Context()), events, job)
		w.Header().Set("Location", "/jobs/"+string(job)+"/events")
		w.WriteHeader(http.StatusCreated)
	})
	// GET /jobs/{id}/events streams a job's events.
	mux.Handle("GET /jobs/{id}/events", sse.Handler(events,
		func(r *http.Request) (JobID, error) { return JobID(r.PathValue("id")), nil },
		sse.WithKnownKeysOnly(), // unknown jobs get 404
	))

	ln, err := net.Listen("tcp", "localhost:0") // any free port
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	shutdown := sse.Graceful(srv, events) // before Serve
	go srv.Serve(ln)
	base := "http://" + ln.Addr().String()

	// The client: start a job, then read its events until it ends.
	resp, err := http.Post(base+"/jobs", "", nil)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		log.Fatal("POST /jobs: ", resp.Status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for ev, err := range sseclient.Events(ctx, base+resp.Header.Get("Location")) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.Name, ev.Data)
	}

	// Ends the streams, stops the server, then the broker.
	if err := shutdown(ctx); err != nil {
		log.Fatal(err)
	}
}

// runJob reports a job's progress into its key, then closes the key: the
// client's range ends after the last event.
func runJob(ctx context.Context, events *sse.Broker[JobID], job JobID) {
	for percent := 25; percent <= 100; percent += 25 {
		time.Sleep(100 * time.Millisecond) // the work
		err := events.Publish(ctx, job, sse.Event{Name: "progress", Data: strconv.Itoa(percent)})
		if err != nil {
			log.Print(err)
			return
		}
	}
	if err := events.Close(ctx, job); err != nil {
		log.Print(err)
	}
}

//readme:end
