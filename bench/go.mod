module github.com/rocketqueue/sse/bench

go 1.26.0

replace github.com/rocketqueue/sse => ../

require (
	github.com/ThreeDotsLabs/watermill v1.5.1
	github.com/cskr/pubsub/v2 v2.0.2
	github.com/rocketqueue/sse v0.0.0
	go.uber.org/goleak v1.3.0
)

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/lithammer/shortuuid/v3 v3.0.7 // indirect
	github.com/oklog/ulid v1.3.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
	golang.org/x/sync v0.24.0 // indirect
)
