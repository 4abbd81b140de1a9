// Command watch follows a job of the progress demo in the terminal: a
// progress bar that the job's "progress" events move, with its "log"
// events printed above it, until the job ends. It reads the job's event
// stream with github.com/rocketqueue/sse/sseclient, which reconnects by
// itself and resumes where it was, so a dropped connection costs nothing.
//
// Start the demo, start a job on its page, and give watch the job's event
// stream (the page's "Watch in another tab" link has the job's ID), from
// the repository's root:
//
//	go run -C examples ./progress
//	go run -C examples ./progress/watch http://localhost:8080/jobs/<id>/events
//
// It exits with status 0 once the job has ended, 1 if the stream fails (an
// unknown job gets 404), 2 for bad usage, and 130 on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rocketqueue/sse/sseclient"
)

func main() {
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: watch http://host/jobs/<id>/events")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := watch(ctx, flag.Arg(0), os.Stdout, os.Stderr, isTerminal(os.Stdout))
	switch {
	case errors.Is(err, context.Canceled):
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "watch:", err)
		os.Exit(1)
	}
}

// watch follows the job whose event stream is at url until it ends, and
// shows it on out; reconnections are reported on errOut. On a terminal the
// bar is redrawn in place; otherwise each change is a line of its own.
func watch(ctx context.Context, url string, out, errOut io.Writer, terminal bool, opts ...sseclient.Option) error {
	b := &bar{out: out, terminal: terminal, pct: -1}
	opts = append([]sseclient.Option{sseclient.WithOnReconnect(func(err error, delay time.Duration) {
		b.print(errOut, fmt.Sprintf("reconnecting in %v: %v", delay.Round(time.Millisecond), err))
	})}, opts...)
	for ev, err := range sseclient.Events(ctx, url, opts...) {
		if err != nil {
			b.finish()
			return err
		}
		switch ev.Name {
		case "progress":
			if pct, err := strconv.Atoi(ev.Data); err == nil {
				b.set(pct)
			}
		case "log":
			b.print(out, ev.Data)
		case sseclient.EventGap:
			if from, to, ok := ev.Gap(); ok {
				b.print(errOut, fmt.Sprintf("(%d earlier events are no longer held by the server)", to-from+1))
			}
		}
	}
	// The stream ended with "close": every step is done, even if a gap
	// hid the last progress event.
	b.set(100)
	b.finish()
	return nil
}

// barWidth is the number of cells of the bar.
const barWidth = 40

// bar draws the progress bar. It is used by the goroutine of watch only.
type bar struct {
	out      io.Writer
	terminal bool // redraw in place, with carriage returns
	pct      int  // what the bar shows; -1 before it is drawn
	shown    bool // the bar is on the terminal's last line
}

// set moves the bar to pct percent.
func (b *bar) set(pct int) {
	pct = min(max(pct, 0), 100)
	if pct == b.pct {
		return
	}
	b.pct = pct
	b.draw()
}

// draw writes the bar: on a terminal over the last one, else on its line.
func (b *bar) draw() {
	n := b.pct * barWidth / 100
	line := fmt.Sprintf("[%s%s] %3d%%", strings.Repeat("#", n), strings.Repeat(".", barWidth-n), b.pct)
	if b.terminal {
		fmt.Fprint(b.out, "\r"+line)
		b.shown = true
	} else {
		fmt.Fprintln(b.out, line)
	}
}

// print writes a line of text to w above the bar.
func (b *bar) print(w io.Writer, text string) {
	if b.terminal && b.shown {
		fmt.Fprint(b.out, "\r"+strings.Repeat(" ", barWidth+6)+"\r")
	}
	fmt.Fprintln(w, text)
	if b.terminal && b.shown {
		b.draw()
	}
}

// finish ends the bar's line.
func (b *bar) finish() {
	if b.terminal && b.shown {
		fmt.Fprintln(b.out)
		b.shown = false
	}
}

// isTerminal reports whether f is a terminal rather than a file or pipe.
func isTerminal(f *os.File) bool {
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}
