// Command modproxy writes a file-based Go module proxy (for
// GOPROXY=file://DIR) serving the versions of this repository's root module
// that the given go.mod files require, each made from the repository's own
// git history as the go command would make it from the repository:
//
//	DIR/<module>/@v/list
//	DIR/<module>/@v/<version>.info   {"Version": ..., "Time": commit time}
//	DIR/<module>/@v/<version>.mod    go.mod at the commit
//	DIR/<module>/@v/<version>.zip    `git archive` of the commit, without
//	                                 the nested modules' directories, under
//	                                 <module>@<version>/
//
// Each required version must name a commit that HEAD contains: a
// pseudo-version whose timestamp is the commit's time in UTC (as the go
// command checks), or a tag. The zero pseudo-version
// v0.0.0-00010101000000-000000000000, which exists only thanks to a
// replace directive, is refused. For each version it prints the two go.sum
// lines its files hash to, so that a caller can check that a build used
// them.
//
// Usage, from the repository's root:
//
//	go run -C .ci/modproxy . -repo "$PWD" -out DIR ssejs/go.mod sseprom/go.mod
//
// (go.mod paths relative to -repo.)
package main

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
	"golang.org/x/mod/semver"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("modproxy: ")
	repo := flag.String("repo", "", "the repository's root, where the root module's go.mod is")
	out := flag.String("out", "", "the proxy's directory, made if missing")
	flag.Parse()
	if *repo == "" || *out == "" || flag.NArg() == 0 {
		log.Fatal("usage: modproxy -repo DIR -out DIR go.mod...")
	}
	g := git{dir: *repo}
	if g.run("rev-parse", "--is-shallow-repository") == "true" {
		log.Fatal("the repository is a shallow clone: its history is needed (git fetch --unshallow)")
	}
	rootMod, err := os.ReadFile(filepath.Join(*repo, "go.mod"))
	if err != nil {
		log.Fatal(err)
	}
	root := modfile.ModulePath(rootMod)
	if root == "" {
		log.Fatalf("%s/go.mod names no module", *repo)
	}

	commits := map[string]string{} // version -> commit
	for _, gomod := range flag.Args() {
		v, err := required(filepath.Join(*repo, gomod), root)
		if err != nil {
			log.Fatal(err)
		}
		c, err := g.commitOf(v)
		if err != nil {
			log.Fatalf("%s: %s %s: %v", gomod, root, v, err)
		}
		log.Printf("%s requires %s %s: commit %s", gomod, root, v, c)
		commits[v] = c
	}

	escPath, err := module.EscapePath(root)
	if err != nil {
		log.Fatal(err)
	}
	dir := filepath.Join(*out, filepath.FromSlash(escPath), "@v")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		log.Fatal(err)
	}
	var versions []string
	for v, c := range commits {
		versions = append(versions, v)
		if err := write(g, dir, module.Version{Path: root, Version: v}, c); err != nil {
			log.Fatalf("%s %s: %v", root, v, err)
		}
	}
	semver.Sort(versions)
	if err := os.WriteFile(filepath.Join(dir, "list"), []byte(strings.Join(versions, "\n")+"\n"), 0o644); err != nil {
		log.Fatal(err)
	}
}

// required returns the version of module root that the go.mod file at
// path requires.
func required(path, root string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	f, err := modfile.Parse(path, data, nil)
	if err != nil {
		return "", err
	}
	for _, r := range f.Require {
		if r.Mod.Path != root {
			continue
		}
		v := r.Mod.Version
		if module.IsZeroPseudoVersion(v) {
			return "", fmt.Errorf("%s requires %s %s, a version that exists only thanks to its replace directive: require a pseudo-version of a commit on main or a tag (RELEASING.md)", path, root, v)
		}
		return v, nil
	}
	return "", fmt.Errorf("%s does not require %s", path, root)
}

type git struct{ dir string }

// run runs git in the repository and returns its output, trimmed; it
// exits on failure.
func (g git) run(args ...string) string {
	out, err := g.output(args...)
	if err != nil {
		log.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func (g git) output(args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = g.dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// commitOf returns the full hash of the commit that version v of the root
// module names, after checking that v is the version the go command would
// accept for it and that HEAD contains the commit.
func (g git) commitOf(v string) (string, error) {
	if !semver.IsValid(v) || semver.Canonical(v) != v {
		return "", fmt.Errorf("not a canonical semantic version")
	}
	var ref string
	if module.IsPseudoVersion(v) {
		rev, err := module.PseudoVersionRev(v)
		if err != nil {
			return "", err
		}
		ref = rev
	} else {
		ref = "refs/tags/" + v
	}
	out, err := g.output("rev-parse", "--verify", "--quiet", ref+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("no such commit in this repository (%s)", ref)
	}
	commit := strings.TrimSpace(string(out))
	if module.IsPseudoVersion(v) {
		base, err := module.PseudoVersionBase(v)
		if err != nil {
			return "", err
		}
		if base != "" {
			if _, err := g.output("merge-base", "--is-ancestor", "refs/tags/"+base, commit); err != nil {
				return "", fmt.Errorf("the pseudo-version's base, tag %s, is not an ancestor of commit %s", base, commit)
			}
		}
		t, err := g.time(commit)
		if err != nil {
			return "", err
		}
		if want := module.PseudoVersion(semver.Major(v), base, t, commit[:12]); want != v {
			return "", fmt.Errorf("commit %s, committed at %s, has the pseudo-version %s", commit, t.Format(time.RFC3339), want)
		}
	}
	if _, err := g.output("merge-base", "--is-ancestor", commit, "HEAD"); err != nil {
		return "", fmt.Errorf("commit %s is not an ancestor of HEAD", commit)
	}
	return commit, nil
}

// time returns the commit time of commit (the committer's, as the go
// command uses), in UTC.
func (g git) time(commit string) (time.Time, error) {
	out, err := g.output("show", "-s", "--format=%ct", commit)
	if err != nil {
		return time.Time{}, err
	}
	sec, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	return time.Unix(sec, 0).UTC(), nil
}

// write writes m's .info, .mod and .zip files, made from commit, into dir,
// and prints the go.sum lines they hash to.
func write(g git, dir string, m module.Version, commit string) error {
	escVers, err := module.EscapeVersion(m.Version)
	if err != nil {
		return err
	}
	base := filepath.Join(dir, escVers)
	t, err := g.time(commit)
	if err != nil {
		return err
	}
	info, err := json.Marshal(struct {
		Version string
		Time    time.Time
	}{m.Version, t})
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".info", append(info, '\n'), 0o644); err != nil {
		return err
	}
	gomod, err := g.output("cat-file", "blob", commit+":go.mod")
	if err != nil {
		return err
	}
	if err := os.WriteFile(base+".mod", gomod, 0o644); err != nil {
		return err
	}

	// The files of the commit, as the go command takes them: git archive
	// with line endings left alone; modzip.Create leaves out the nested
	// modules' directories, vendor directories and files a module zip
	// cannot hold.
	archive, err := g.output("-c", "core.autocrlf=input", "-c", "core.eol=lf", "archive", "--format=zip", commit)
	if err != nil {
		return err
	}
	zr, err := zip.NewReader(bytes.NewReader(archive), int64(len(archive)))
	if err != nil {
		return err
	}
	var files []modzip.File
	for _, f := range zr.File {
		if !strings.HasSuffix(f.Name, "/") {
			files = append(files, zipFile{f})
		}
	}
	tmp := base + ".zip.tmp"
	w, err := os.Create(tmp)
	if err != nil {
		return err
	}
	err = modzip.Create(w, m, files)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if _, err := modzip.CheckZip(m, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, base+".zip"); err != nil {
		return err
	}

	zipHash, err := dirhash.HashZip(base+".zip", dirhash.Hash1)
	if err != nil {
		return err
	}
	modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gomod)), nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n%s %s/go.mod %s\n", m.Path, m.Version, zipHash, m.Path, m.Version, modHash)
	return nil
}

// zipFile is a file of git archive's zip, as modzip.Create takes it.
type zipFile struct{ f *zip.File }

func (z zipFile) Path() string                 { return z.f.Name }
func (z zipFile) Lstat() (os.FileInfo, error)  { return z.f.FileInfo(), nil }
func (z zipFile) Open() (io.ReadCloser, error) { return z.f.Open() }
