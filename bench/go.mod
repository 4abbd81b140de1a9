module github.com/rocketqueue/sse/bench

go 1.26.0

replace github.com/rocketqueue/sse => ../

require (
	github.com/ThreeDotsLabs/watermill v1.5.1
	github.com/cskr/pubsub/v2 v2.0.2
	github.com/r3labs/sse/v2 v2.10.0
	github.com/rocketqueue/sse v0.0.0
	github.com/tmaxmax/go-sse v0.12.0
	go.uber.org/goleak v1.3.0
	gopkg.in/cenkalti/backoff.v1 v1.1.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/lithammer/shortuuid/v3 v3.0.7 // indirect
	github.com/oklog/ulid v1.3.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	golang.org/x/net v0.0.0-20191116160921-f9c825593386 // indirect
)
