package ssetest_test

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/rocketqueue/sse/ssetest"
)

func TestEffectiveType(t *testing.T) {
	for _, tc := range []struct{ typ, want string }{
		{"", "message"},
		{"message", "message"},
		{"add", "add"},
	} {
		if got := (ssetest.Event{Type: tc.typ}).EffectiveType(); got != tc.want {
			t.Errorf("Event{Type: %q}.EffectiveType() = %q, want %q", tc.typ, got, tc.want)
		}
	}
}

func TestMaxLineSize(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want result
	}{
		{"at limit", "data: ab\n\n", result{Events: events{{Data: "ab"}}}},
		{"over limit", "data: a\n\ndata: abc\n\n", result{Events: events{{Data: "a"}}, Err: ssetest.ErrLineTooLong}},
		{"comment over limit", ":23456789\n", result{Err: ssetest.ErrLineTooLong}},
		{"unterminated over limit", "data: abc", result{Err: ssetest.ErrLineTooLong}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got result
			r := ssetest.NewReader(strings.NewReader(tc.in))
			r.MaxLineSize = 8
			r.OnComment = func(text string) { got.Comments = append(got.Comments, text) }
			for {
				ev, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					got.Err = err
					if _, again := r.Next(); again != err {
						t.Errorf("Next after %v = %v, want the same error", err, again)
					}
					break
				}
				got.Events = append(got.Events, ev)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// endless is a stream of one never-ending line that counts its bytes.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += len(p)
	return len(p), nil
}

func TestDefaultMaxLineSize(t *testing.T) {
	for _, size := range []int{0, -1} {
		src := new(endless)
		r := ssetest.NewReader(src)
		r.MaxLineSize = size
		if _, err := r.Next(); err != ssetest.ErrLineTooLong {
			t.Fatalf("MaxLineSize %d: Next() error = %v, want ErrLineTooLong", size, err)
		}
		// The reader may buffer a little beyond the limit, but not much.
		if limit := ssetest.DefaultMaxLineSize + 64<<10; src.n > limit {
			t.Errorf("MaxLineSize %d: read %d bytes of an endless line, want at most %d", size, src.n, limit)
		}
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	src := io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom))
	got, err := ssetest.ReadAll(src)
	if want := (events{{Data: "a"}}); err != boom || !reflect.DeepEqual(got, want) {
		t.Errorf("ReadAll() = %#v, %v; want %#v, %v", got, err, want, boom)
	}
}

func TestErrorIsSticky(t *testing.T) {
	// TimeoutReader fails its second read only; the Reader must not resume
	// after the failure, since it may have lost part of the stream.
	r := ssetest.NewReader(iotest.TimeoutReader(strings.NewReader("data: a\n\ndata: b\n\n")))
	for _, want := range []string{"a", "b"} {
		if ev, err := r.Next(); err != nil || ev.Data != want {
			t.Fatalf("Next() = %#v, %v; want data %q", ev, err, want)
		}
	}
	for range 2 {
		if _, err := r.Next(); err != iotest.ErrTimeout {
			t.Fatalf("Next() error = %v, want %v", err, iotest.ErrTimeout)
		}
	}
}

func TestEOFIsSticky(t *testing.T) {
	r := ssetest.NewReader(strings.NewReader("data: a\n\n"))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if ev, err := r.Next(); err != io.EOF {
			t.Fatalf("Next() = %#v, %v; want io.EOF", ev, err)
		}
	}
}

func TestReadAll(t *testing.T) {
	got, err := ssetest.ReadAll(strings.NewReader(": hi\nretry: 10\nid: 1\nevent: a\ndata: x\n\ndata: y\n\ndata: z"))
	want := events{{ID: "1", Type: "a", Data: "x"}, {ID: "1", Data: "y"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("ReadAll() = %#v, %v; want %#v, nil", got, err, want)
	}
}

// TestLive checks that Next returns an event as soon as its blank line has
// been read, without waiting for more of the stream, including when that
// line ends in a CR whose LF has not been sent yet.
func TestLive(t *testing.T) {
	pr, pw := io.Pipe()
	first := make(chan struct{}) // closed once the first event is read
	done := make(chan struct{})
	defer func() { <-done }()
	defer pr.Close() // unblocks the writer if the test fails early
	go func() {
		defer close(done)
		if _, err := io.WriteString(pw, "data: a\r\r"); err != nil {
			return
		}
		<-first
		for _, chunk := range []string{"\ndata: b\r", "\ndata: c\r", "\n\r", "\n"} {
			if _, err := io.WriteString(pw, chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()

	r := ssetest.NewReader(pr)
	ev, err := r.Next()
	close(first)
	if err != nil || ev.Data != "a" {
		t.Fatalf("Next() = %#v, %v; want data %q", ev, err, "a")
	}
	if ev, err := r.Next(); err != nil || ev.Data != "b\nc" {
		t.Fatalf("Next() = %#v, %v; want data %q", ev, err, "b\nc")
	}
	if ev, err := r.Next(); err != io.EOF {
		t.Fatalf("Next() = %#v, %v; want io.EOF", ev, err)
	}
}
