// Package ssejs keeps the keyed event streams of
// github.com/rocketqueue/sse in NATS JetStream, so that every replica of a
// server, and every worker process, shares them.
package ssejs
