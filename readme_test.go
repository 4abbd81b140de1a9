package sse

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestReadmeShowsCompiledCode checks that every Go and JavaScript block in
// README.md is, byte for byte, a marked region of a file that is compiled
// or run by the tests: the block follows a line "<!-- readme: FILE REGION
// -->", and FILE holds the block between the lines "//readme:REGION" and
// "//readme:end". So the README cannot show code that does not build.
func TestReadmeShowsCompiledCode(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?m)^(<!-- readme: (\\S+) (\\S+) -->\\n)?```(\\w*)\\n((?s:.*?))```").FindAllStringSubmatch(string(readme), -1)
	checked := 0
	for _, b := range blocks {
		file, region, lang, code := b[2], b[3], b[4], b[5]
		if lang != "go" && lang != "js" {
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

// readmeRegion returns the lines of file between "//readme:name" and
// "//readme:end", without blank lines at either end.
func readmeRegion(file, name string) (string, error) {
	src, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	in := false
	for line := range strings.Lines(string(src)) {
		switch strings.TrimSpace(line) {
		case "//readme:" + name:
			in = true
			continue
		case "//readme:end":
			if in {
				// Blank lines that gofmt keeps next to the markers are not
				// the code's.
				return strings.Trim(out.String(), "\n") + "\n", nil
			}
		}
		if in {
			out.WriteString(line)
		}
	}
	return "", &os.PathError{Op: "region " + name, Path: file, Err: os.ErrNotExist}
}
