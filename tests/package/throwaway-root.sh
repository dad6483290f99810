#!/bin/sh
# throwaway-root.sh CMD...: runs CMD in a throwaway copy of this machine's
# root, so that installing, running and purging the package never touches
# the host's own installation.
#
# The copy is an overlay of / whose writes go to a tmpfs, in a mount and pid
# namespace of its own (its own /proc, an empty /run, so no init system of
# the host's is reached), with this tree bound in at its own path. Everything
# goes when CMD ends. CMD sees MODELD_THROWAWAY_ROOT=1 there; where such a
# root cannot be made (not root, no unshare, no overlayfs), CMD runs here
# without it, and the package tests skip saying why.
top=$(pwd)
[ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 || exec "$@"
t=$(mktemp -d "${TMPDIR:-/tmp}/modeld-root.XXXXXX") || exec "$@"
trap 'rm -rf "$t"' EXIT
# shellcheck disable=SC2016 # expanded by the inner shell
unshare --mount --pid --fork --propagation private sh -c '
	t=$1 top=$2
	shift 2
	if mount -t tmpfs -o mode=0755 modeld-root "$t" && mkdir "$t/upper" "$t/work" "$t/root" &&
	   mount -t overlay overlay -o "lowerdir=/,upperdir=$t/upper,workdir=$t/work" "$t/root" &&
	   mount -t proc proc "$t/root/proc" && mount --rbind /dev "$t/root/dev" &&
	   mount --rbind /sys "$t/root/sys" && mount -t tmpfs -o mode=0755 run "$t/root/run" &&
	   mkdir -p "$t/root$top" && mount --bind "$top" "$t/root$top"; then
		exec chroot "$t/root" sh -c "cd \"\$0\" && MODELD_THROWAWAY_ROOT=1 exec \"\$@\"" "$top" "$@"
	fi
	echo "throwaway-root.sh: no throwaway root could be made here" >&2
	exec "$@"
' sh "$t" "$top" "$@"
