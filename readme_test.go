package sse

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestReadmeShowsCompiledCode checks that every Go, JavaScript and nginx
// block in README.md is, byte for byte, a marked region of a file that is
// compiled or run by the tests: the block follows a line "<!-- readme: FILE
// REGION -->", and FILE holds the block between the comment lines
// "//readme:REGION" (or "#readme:REGION") and "//readme:end". So the README
// cannot show code that does not build or that the tests do not run.
func TestReadmeShowsCompiledCode(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?m)^(<!-- readme: (\\S+) (\\S+) -->\\n)?```(\\w*)\\n((?s:.*?))```").FindAllStringSubmatch(string(readme), -1)
	checked := 0
	for _, b := range blocks {
		file, region, lang, code := b[2], b[3], b[4], b[5]
		if lang != "go" && lang != "js" && lang != "nginx" {
			continue
		}
		if file == "" {
			t.Errorf("a %s block has no readme marker:\n%s", lang, code)
			continue
		}
		want, err := readmeRegion(file, region)
		if err != nil {
			t.Error(err)
			continue
		}
		if code != want {
			t.Errorf("README.md's %s block %s of %s differs from the file:\n--- README\n%s--- %s\n%s", lang, region, file, code, file, want)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("README.md has no checked code block")
	}
}

// TestReadmeProgramRuns builds and runs the README's complete program,
// testdata/quickstart (a package that go vet ./... and go test ./... do not
// reach, since it lives under testdata), and checks what it prints: the
// job's events, in order, which its Go client read over SSE. It skips
// without the go command, unless CI is set.
func TestReadmeProgramRuns(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skip("the go command is not installed")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goCmd, "run", "./testdata/quickstart")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go run ./testdata/quickstart: %v\n%s", err, stderr.String())
	}
	want := "progress 25\nprogress 50\nprogress 75\nprogress 100\n"
	if string(out) != want {
		t.Errorf("testdata/quickstart printed:\n%s\nwant:\n%s\nstderr:\n%s", out, want, stderr.String())
	}
}

// readmeRegion returns the lines of file between "//readme:name" and
// "//readme:end", without blank lines at either end or the indentation
// they all share.
func readmeRegion(file, name string) (string, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	in := false
	for line := range strings.Lines(string(src)) {
		// A marker is a comment, "//" or "#", alone on its line.
		switch strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(line), "//"), "#") {
		case "readme:" + name:
			in = true
			continue
		case "readme:end":
			if in {
				// Blank lines that gofmt keeps next to the markers are not
				// the code's, nor is the indentation all its lines share.
				return dedent(strings.Trim(out.String(), "\n") + "\n"), nil
			}
		}
		if in {
			out.WriteString(line)
		}
	}
	return "", &os.PathError{Op: "region " + name, Path: file, Err: os.ErrNotExist}
}

// dedent removes from every line of s the leading spaces and tabs that all
// its non-blank lines share.
func dedent(s string) string {
	prefix := ""
	first := true
	for line := range strings.Lines(s) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if first {
			prefix, first = indent, false
			continue
		}
		for !strings.HasPrefix(indent, prefix) {
			prefix = prefix[:len(prefix)-1]
		}
	}
	var out strings.Builder
	for line := range strings.Lines(s) {
		out.WriteString(strings.TrimPrefix(line, prefix))
	}
	return out.String()
}

// TestEveryModuleIsTested: each nested module (a directory with a go.mod)
// is in the README's test command and in the modules that CI checks, so
// that a new one cannot be left out of both unnoticed.
func TestEveryModuleIsTested(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^modules=\((.*)\)$`).FindSubmatch(ci)
	if m == nil {
		t.Fatal(".ci/run has no modules=(...) line")
	}
	checked := strings.Fields(string(m[1]))
	mods, err := filepath.Glob("*/go.mod")
	if err != nil || len(mods) == 0 {
		t.Fatalf("no nested module found: %v", err)
	}
	for _, mod := range mods {
		dir := filepath.Dir(mod)
		if !strings.Contains(string(readme), "(cd "+dir+" && go test -race ./...)") {
			t.Errorf("README's test command does not test %s", dir)
		}
		if !slices.Contains(checked, dir) {
			t.Errorf(".ci/run does not check %s", dir)
		}
	}
}
