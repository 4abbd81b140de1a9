// Package bench runs the workloads of the sse module's internal/workload
// package through peer libraries: github.com/cskr/pubsub/v2 and the
// gochannel Pub/Sub of github.com/ThreeDotsLabs/watermill (see
// peers_test.go for how each is configured), each used as a queue per key
// with one subscriber per topic (W1 to W7), and as fan-out with one topic
// per key and one subscription per subscriber (F1 to F3). It is a module of
// its own so that the sse module does not depend on them. The Broker and
// the lock-based baselines run the same workloads in the sse module's
// bench_test.go.
//
// run.sh runs every benchmark of both modules, keeps the raw output and
// benchstat tables under results/, and draws results/ns-per-msg.svg and
// results/fanout-ns-per-msg.svg with cmd/chart.
package bench
