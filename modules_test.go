package sse

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// userModules are the nested modules meant for users, which must be
// installable with go get: each requires a version of the root module that
// exists, not the zero pseudo-version that only its replace directive
// makes work (RELEASING.md).
var userModules = []string{"ssejs", "sseprom"}

// rootRequire matches the requirement of the root module in a go.mod file,
// in a require block or on a require line of its own.
var rootRequire = regexp.MustCompile(`(?m)^(?:require)?\s*github\.com/rocketqueue/sse\s+(v\S+)`)

// pseudoVersion matches a pseudo-version: its timestamp and its revision.
var pseudoVersion = regexp.MustCompile(`^v\d+\.\d+\.\d+-(?:(?:\S+\.)?0\.)?(\d{14})-([0-9a-f]{12})$`)

// TestUserModulesRequireARealRoot: ssejs and sseprom require a version of
// the root module that a user can get, a tag or the pseudo-version of a
// commit HEAD contains (timestamp and revision both the commit's), and keep
// their replace directive so that the repository's tests build them against
// the root in the work tree. CI's .ci/install-check.sh then installs them
// from that version. It skips without git or outside a git checkout, unless
// CI is set.
func TestUserModulesRequireARealRoot(t *testing.T) {
	git := gitRunner(t)
	for _, m := range userModules {
		gomod, err := os.ReadFile(m + "/go.mod")
		if err != nil {
			t.Error(err)
			continue
		}
		if !regexp.MustCompile(`(?m)^replace github\.com/rocketqueue/sse => \.\./?$`).Match(gomod) {
			t.Errorf("%s/go.mod has no replace github.com/rocketqueue/sse => ../: its tests would not build against this work tree", m)
		}
		req := rootRequire.FindSubmatch(gomod)
		if req == nil {
			t.Errorf("%s/go.mod does not require github.com/rocketqueue/sse", m)
			continue
		}
		v := string(req[1])
		if v == "v0.0.0-00010101000000-000000000000" {
			t.Errorf("%s/go.mod requires github.com/rocketqueue/sse %s, which does not exist outside this repository: require a commit on main (RELEASING.md)", m, v)
			continue
		}
		var ref string
		p := pseudoVersion.FindStringSubmatch(v)
		if p != nil {
			ref = p[2]
		} else {
			ref = "refs/tags/" + v
		}
		commit, err := git("rev-parse", "--verify", "--quiet", ref+"^{commit}")
		if err != nil {
			if shallow, _ := git("rev-parse", "--is-shallow-repository"); shallow == "true" {
				t.Errorf("%s/go.mod requires github.com/rocketqueue/sse %s, not in this shallow clone: the check needs the full history", m, v)
			} else {
				t.Errorf("%s/go.mod requires github.com/rocketqueue/sse %s, but this repository has no commit %s", m, v, ref)
			}
			continue
		}
		if _, err := git("merge-base", "--is-ancestor", commit, "HEAD"); err != nil {
			t.Errorf("%s/go.mod requires github.com/rocketqueue/sse %s, whose commit %s is not an ancestor of HEAD", m, v, commit)
			continue
		}
		if p == nil {
			continue
		}
		ct, err := git("show", "-s", "--format=%ct", commit)
		if err != nil {
			t.Error(err)
			continue
		}
		sec, err := strconv.ParseInt(ct, 10, 64)
		if err != nil {
			t.Error(err)
			continue
		}
		if stamp := time.Unix(sec, 0).UTC().Format("20060102150405"); stamp != p[1] {
			t.Errorf("%s/go.mod requires github.com/rocketqueue/sse %s, but commit %s was committed at %s UTC: the go command refuses that pseudo-version", m, v, commit[:12], stamp)
		}
	}
}

// gitRunner returns a function running git in this directory, after
// skipping the test if git or the repository is missing (failing it
// instead when CI is set).
func gitRunner(t *testing.T) func(args ...string) (string, error) {
	t.Helper()
	unavailable := func(why string) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	if _, err := exec.LookPath("git"); err != nil {
		unavailable("git is not installed")
	}
	if _, err := os.Stat(".git"); err != nil {
		unavailable("not in a git checkout: " + err.Error())
	}
	return func(args ...string) (string, error) {
		out, err := exec.Command("git", args...).Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) && len(ee.Stderr) > 0 {
			err = errors.New(err.Error() + ": " + strings.TrimSpace(string(ee.Stderr)))
		}
		return strings.TrimSpace(string(out)), err
	}
}
