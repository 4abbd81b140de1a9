package sse

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeShowsCompiledExamples checks that every Go block in README.md is
// code from example_test.go, so the README cannot drift from what compiles.
func TestReadmeShowsCompiledExamples(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	examples, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	src := normalize(string(examples))
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	if len(blocks) == 0 {
		t.Fatal("README.md has no Go code block")
	}
	for _, b := range blocks {
		if !strings.Contains(src, normalize(b[1])) {
			t.Errorf("README.md shows code that is not in example_test.go:\n%s", b[1])
		}
	}
}

// normalize drops indentation and blank lines.
func normalize(s string) string {
	var out []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n") + "\n"
}
