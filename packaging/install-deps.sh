#!/bin/sh
# Installs the Debian packages modeld needs, when any is missing.
# usage: install-deps.sh build|test|deb|fuzz
set -e
build="gcc make pkg-config libevent-dev libmsgpack-dev libinih-dev libjansson-dev libseccomp-dev libsystemd-dev"
deb="dpkg-dev debhelper lintian"
test="$build $deb libcmocka-dev python3 python3-msgpack mandoc bash-completion shellcheck"
case "$1" in
build) want=$build ;;
test) want=$test ;;
deb) want="$build $deb" ;;
fuzz) want="$build clang" ;;
*) echo "usage: $0 build|test|deb|fuzz" >&2; exit 2 ;;
esac
missing=
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
# What builds llama.cpp for the llama engine, looked for as commands: a
# Node.js from elsewhere may bring its own npm, which Debian's would clash with.
for c in "g++:g++" "cmake:cmake" "git:git" "npm:nodejs npm"; do
	command -v "${c%%:*}" >/dev/null 2>&1 || missing="$missing ${c#*:}"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
sudo=
[ "$(id -u)" -ne 0 ] && sudo=sudo

# On a fresh machine another apt (unattended-upgrades) may hold dpkg's or the
# lists' lock: apt waits for dpkg's lock itself, and a run that still fails
# is tried again a few times before giving up.
apt_get() {
	tries=1
	until $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@"; do
		[ $tries -ge 10 ] && return 1
		echo "apt-get $1 failed (is another apt running?); trying again in 10 s" >&2
		tries=$((tries + 1))
		sleep 10
	done
}
apt_get update -qq
apt_get install -y -qq $missing
