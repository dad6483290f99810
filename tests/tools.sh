#!/bin/sh
# Fetches the clients the tests use that nobody here wrote, into DIR
# (default build/tools), when they are not there yet:
#   promtool, from Debian's prometheus package (apt-get download: checked
#   against the archive's signed index; only promtool is kept);
#   the official OpenAI client for Node.js, as tests/openai/package-lock.json
#   pins it (npm ci checks each package's sha512).
# A client that cannot be fetched is said; the tests that need it skip.
dir=${1:-build/tools}
mkdir -p "$dir"
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -x "$dir/promtool" ]; then
	tmp=$(mktemp -d)
	if (cd "$tmp" && apt-get download -qq prometheus >/dev/null 2>&1 ||
		{ [ "$(id -u)" -eq 0 ] && apt-get update -qq >/dev/null 2>&1 &&
		  apt-get download -qq prometheus >/dev/null 2>&1; }) &&
	   dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -x -C "$tmp" ./usr/bin/promtool; then
		mv "$tmp/usr/bin/promtool" "$dir/promtool"
	else
		echo "tools: cannot fetch promtool (Debian's prometheus package); its checks skip" >&2
	fi
	rm -rf "$tmp"
fi

if [ ! -d "$dir/openai/node_modules/openai" ]; then
	mkdir -p "$dir/openai"
	cp "$here/openai/package.json" "$here/openai/package-lock.json" "$dir/openai/"
	if ! (cd "$dir/openai" && npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>&1); then
		echo "tools: cannot fetch the openai package from npm; its tests skip" >&2
		rm -rf "$dir/openai/node_modules"
	fi
fi
exit 0
