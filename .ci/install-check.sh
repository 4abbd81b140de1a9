#!/usr/bin/env bash
# Proves that a user outside this repository can install the modules meant
# for users, ssejs and sseprom: each is built, vetted and tested with no
# replace directive, against the version of the root module its go.mod
# requires, as `go get` would give it to a user.
#
# That version is not published anywhere this script can reach, so it is
# made from the repository's own git history: .ci/modproxy writes a
# file-based GOPROXY holding it (list, .info, .mod and .zip, as the go
# command would make them from the commit), refusing a version that names no
# commit of HEAD's history, or a pseudo-version that is not the commit's.
# The go command, fetching the same versions from this repository with git,
# must compute the same hashes. Then each module is copied (the files git
# tracks) to a directory outside the repository, its replace directive
# dropped, and built with GOPROXY=file://PROXY,$(go env GOPROXY): the root
# module comes from the local proxy, not from ../, and every other
# dependency from the usual proxy. GONOSUMDB keeps the checksum database
# out of it for the root module, which is not public; go mod tidy writes
# the root's hashes, from the local proxy, into the copy's go.sum. The
# usual module cache is used, so that the dependencies' packages come from
# the build cache that CI's earlier steps filled (cold, the step takes
# minutes); the root version lands in it as a download would, the same
# files as the go command makes from git, as checked.
#
# Needs Go, git and the repository's full history (a clean clone has it; a
# shallow one, as some CI checkouts make by default, does not).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
root=github.com/rocketqueue/sse
user_modules=(ssejs sseprom)

say() { printf -- '-- %s\n' "$*"; }
fail() { printf 'install-check: %s\n' "$*" >&2; exit 1; }

if [[ $(git rev-parse --is-shallow-repository) == true ]]; then
	fail "this clone is shallow: the root module's versions are made from the repository's history (git fetch --unshallow)"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/sse-install-check.XXXXXX")
# The go command makes the module cache's directories read-only.
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
usual_proxy=$(go env GOPROXY)
proxy=$work/proxy

say "a local GOPROXY for the versions of $root that ${user_modules[*]} require"
gomods=()
for m in "${user_modules[@]}"; do gomods+=("$m/go.mod"); done
go run -C .ci/modproxy . -repo "$repo" -out "$proxy" "${gomods[@]}" >"$work/sums"
cat "$work/sums"
find "$proxy" -type f | sed "s|^$proxy/|   |" | sort

say "the go command, fetching each version from this repository with git, makes the same module"
mkdir "$work/direct"
(
	cd "$work/direct"
	go mod init example.com/direct >/dev/null 2>&1
	# https://github.com/rocketqueue/sse is read from this clone instead.
	export GOMODCACHE=$work/direct/modcache GOPROXY=direct GONOSUMDB=$root GOPRIVATE= GONOPROXY= GOFLAGS=-mod=mod \
		GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0=url.file://$repo/.insteadOf GIT_CONFIG_VALUE_0=https://$root \
		GIT_CONFIG_KEY_1=protocol.file.allow GIT_CONFIG_VALUE_1=always
	while read -r _ version _; do
		[[ $version == */go.mod ]] && continue
		json=$(go mod download -json "$root@$version")
		sum=$(sed -n 's/^\t"Sum": "\(.*\)",$/\1/p' <<<"$json")
		modsum=$(sed -n 's/^\t"GoModSum": "\(.*\)",$/\1/p' <<<"$json")
		grep -qxF "$root $version $sum" "$work/sums" && grep -qxF "$root $version/go.mod $modsum" "$work/sums" ||
			fail "the go command makes $root $version with the hashes $sum and $modsum, the local proxy's differ"
		echo "   $root $version: same hashes"
	done <"$work/sums"
)

for m in "${user_modules[@]}"; do
	say "$m, installed as a user would"
	dst=$work/user/$m
	while IFS= read -r -d '' f; do
		[[ -f $f ]] || continue
		mkdir -p "$work/user/$(dirname "$f")"
		cp -p "$f" "$work/user/$f"
	done < <(git ls-files -z -- "$m")
	(
		cd "$dst"
		export GOWORK=off GOFLAGS=-mod=mod GOPROXY="file://$proxy,$usual_proxy" GONOSUMDB=$root GOPRIVATE= GONOPROXY=
		go mod edit -dropreplace=$root
		! grep -q replace go.mod || fail "$m/go.mod still has a replace directive"
		cp go.mod go.mod.orig
		go mod tidy
		diff -u go.mod.orig go.mod || echo "   (go mod tidy changed $m's go.mod, without its replace: above)"
		rm go.mod.orig
		# The root's hashes in go.sum are the local proxy's: the root came
		# from it (or from the module cache, holding the same files).
		grep -q "^$root v[^ ]* h1:" go.sum || fail "$m/go.sum has no hash of $root"
		grep "^$root " go.sum | while IFS= read -r line; do
			grep -qxF "$line" "$work/sums" || fail "$m/go.sum has \"$line\", which is not the local proxy's hash"
		done
		dir=$(go list -m -f '{{.Dir}}' "$root")
		[[ $dir != "$repo" && $dir != "$repo"/* ]] || fail "$m builds $root from the repository ($dir)"
		echo "   $(go list -m "$root") from $dir"
		go build ./...
		go vet ./...
		go test -count=1 -short ./...
	)
done
say "ok: ${user_modules[*]} install from $root's own history"
