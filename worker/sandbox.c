/*
 * sandbox.c: ids and capabilities dropped, seccomp allow-list (libseccomp),
 * no_new_privs and rlimits.
 *
 * How to debug a refused call: run modeld with MODELD_SECCOMP_DEBUG=1 in its
 * environment (workers inherit it). A refused call is then trapped, named in
 * the log ("seccomp: refused openat") and fails with ENOSYS, instead of the
 * worker being killed. Add the call below only once you know who makes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sched.h>
#include <ucontext.h>
#include <unistd.h>
#include <grp.h>
#include <sys/syscall.h>
#include <linux/capability.h>

#include <seccomp.h>

#include "sandbox.h"

/* Calls that fail with an errno, so that libc probes fail softly. */
static const struct { int nr; int err; } denied[] = {
	{ SCMP_SYS(openat), EACCES },		/* no file system once loaded */
	{ SCMP_SYS(open), EACCES },
	{ SCMP_SYS(socket), EACCES },		/* no new connections */
	{ SCMP_SYS(clone3), ENOSYS },		/* glibc then uses clone, checked below */
};

/* Calls allowed with any arguments. */
static const int allowed[] = {
	/* the channel: frames in and out, with poll */
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(recvmsg), SCMP_SYS(sendmsg),
	SCMP_SYS(sendto), SCMP_SYS(recvfrom), SCMP_SYS(poll), SCMP_SYS(ppoll),
	SCMP_SYS(epoll_wait), SCMP_SYS(pread64), SCMP_SYS(lseek), SCMP_SYS(close),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat),
	/* memory */
	SCMP_SYS(brk), SCMP_SYS(mmap), SCMP_SYS(munmap), SCMP_SYS(mremap),
	SCMP_SYS(mprotect), SCMP_SYS(madvise),
	/* threads, time and waiting: engines run helper threads (llama.cpp's
	 * OpenMP pool starts at the first decode, after the filter, and was seen
	 * under MODELD_SECCOMP_DEBUG to need nothing beyond these and clone) */
	SCMP_SYS(futex), SCMP_SYS(sched_yield), SCMP_SYS(nanosleep),
	SCMP_SYS(clock_nanosleep), SCMP_SYS(clock_gettime), SCMP_SYS(gettimeofday),
	SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(sysinfo),
	SCMP_SYS(set_robust_list), SCMP_SYS(rseq),	/* what a new thread does first */
	SCMP_SYS(sched_getaffinity), SCMP_SYS(sigaltstack),	/* runtimes set threads up */
	/* signals and the way out */
	SCMP_SYS(rt_sigaction), SCMP_SYS(rt_sigprocmask), SCMP_SYS(rt_sigreturn),
	SCMP_SYS(restart_syscall), SCMP_SYS(exit), SCMP_SYS(exit_group),
};

/*
 * ioctl goes only to the descriptors a device driver opened: a loaded
 * worker's own are 0 to 3 (/dev/null, its log pipe, its channel), and an
 * ioctl on one of them fails as on a file that is not a terminal. Terminal
 * requests (push input, take a terminal over, redirect the console) are
 * refused whatever the descriptor. The kernel reads the request as 32 bits,
 * so that comparison ignores the upper ones. Every other request to a
 * driver's descriptor passes: the GPU driver's are many and its own.
 */
#define SANDBOX_FIRST_DRIVER_FD 4
static const unsigned long tty_ioctls[] = { TIOCSTI, TIOCLINUX, TIOCCONS, TIOCSCTTY, TIOCSETD };

#define SANDBOX_MAX_SYSCALL 512
static const char *syscall_names[SANDBOX_MAX_SYSCALL];

/* SIGSYS in debug mode: name the call and make it fail with ENOSYS. */
static void sandbox_trap(int sig, siginfo_t *si, void *uctx)
{
	(void)sig;
	char line[96];
	int nr = si->si_syscall;
	const char *name = nr >= 0 && nr < SANDBOX_MAX_SYSCALL && syscall_names[nr] ? syscall_names[nr] : "?";
	int n = snprintf(line, sizeof line, "modeld-worker: seccomp: refused %s (%d)\n", name, nr);
	if (write(STDERR_FILENO, line, (size_t)n) < 0)
		return;
	((ucontext_t *)uctx)->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
}

static int sandbox_debug_setup(void)
{
	struct sigaction sa = { .sa_sigaction = sandbox_trap, .sa_flags = SA_SIGINFO };

	for (int nr = 0; nr < SANDBOX_MAX_SYSCALL; nr++)
		syscall_names[nr] = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGSYS, &sa, NULL);
}

static int sandbox_rlimits(void)
{
	struct rlimit zero = { 0, 0 };

	/* No core files holding weights. RLIMIT_FSIZE stays: stderr may be a log
	 * file, and the filter already keeps the worker from opening any other.
	 * Threads and fds stay too: device drivers need both. */
	return setrlimit(RLIMIT_CORE, &zero);
}

static bool opens(int nr)
{
	return nr == SCMP_SYS(openat) || nr == SCMP_SYS(open);
}

/* Flags of open and openat that a loading worker may not use, each as mask and value;
 * for_devices: allowed where the slot has a device, whose driver opens its files read-write. */
static const struct { scmp_datum_t mask, value; bool for_devices; } open_refused[] = {
	{ O_CREAT, O_CREAT, false },		/* nothing is made */
	{ O_TRUNC, O_TRUNC, false },		/* nor cut short, even opened to be read */
	{ O_ACCMODE, O_WRONLY, true },		/* nor opened to be written */
	{ O_ACCMODE, O_RDWR, true },
	{ O_ACCMODE, O_ACCMODE, true },
};

/* The flags argument: open's second, openat's third. */
static struct scmp_arg_cmp open_flags(int nr, scmp_datum_t mask, scmp_datum_t value)
{
	return SCMP_CMP(nr == SCMP_SYS(openat) ? 2 : 1, SCMP_CMP_MASKED_EQ, mask, value);
}

/*
 * While loading, files may be opened to be read: llama.cpp opens the model
 * by its path (/proc/self/fd/N), the llama engine /proc/self/statm for its
 * memory, libc /etc/localtime, jansson /dev/urandom (what strace saw on
 * loads of the cpu and llama engines: nothing opened to be written).
 * devices: files that exist may be opened to be written too, for the GPU
 * driver's device files (the driver may open them as it sets memory up).
 * Any other open fails with EACCES.
 */
static int allow_opening(scmp_filter_ctx ctx, bool devices)
{
	const int calls[] = { SCMP_SYS(openat), SCMP_SYS(open) };
	scmp_datum_t refused = 0;
	int rc = 0;

	for (size_t i = 0; i < sizeof open_refused / sizeof open_refused[0]; i++)
		if (!devices || !open_refused[i].for_devices)
			refused |= open_refused[i].mask;
	for (size_t c = 0; rc == 0 && c < sizeof calls / sizeof calls[0]; c++) {
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[c], 1, open_flags(calls[c], refused, 0));
		for (size_t i = 0; rc == 0 && i < sizeof open_refused / sizeof open_refused[0]; i++)
			if (!devices || !open_refused[i].for_devices)
				rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), calls[c], 1,
						      open_flags(calls[c], open_refused[i].mask, open_refused[i].value));
	}
	if (rc == 0)	/* the loaded worker's filter, which can only take more away */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(seccomp), 0);
	return rc;
}

/*
 * The filter: the architecture is checked by libseccomp (a call from another
 * ABI kills), then the denied and allowed calls above (while loading, files
 * may be opened: allow_opening), then calls allowed with
 * arguments checked: clone only for a thread (a device driver may start
 * one), never a process. Anything else kills the worker (traps in debug).
 * TSYNC puts every thread of the worker, the driver's too, under it. The
 * loaded worker's filter stacks on the loading one: of the two answers to
 * a call, the kernel takes the stricter.
 */
static int sandbox_filter(int debug, enum sandbox_stage stage)
{
	bool loading = stage != SANDBOX_LOADED;
	scmp_filter_ctx ctx = seccomp_init(debug ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
	int rc = ctx ? seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) : -ENOMEM;

	if (rc == 0)	/* sandbox_enter set no_new_privs, and the filter refuses prctl */
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);

	for (size_t i = 0; rc == 0 && i < sizeof denied / sizeof denied[0]; i++)
		if (!loading || !opens(denied[i].nr))
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(denied[i].err), denied[i].nr, 0);
	if (rc == 0 && loading)
		rc = allow_opening(ctx, stage == SANDBOX_LOADING_DEVICE);
	for (size_t i = 0; rc == 0 && i < sizeof allowed / sizeof allowed[0]; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, allowed[i], 0);
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
				      SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	/* a refusal wins over an allow that also matches; an unconditional allow would win over both */
	for (size_t i = 0; rc == 0 && i < sizeof tty_ioctls / sizeof tty_ioctls[0]; i++)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
				      SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, tty_ioctls[i]));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOTTY), SCMP_SYS(ioctl), 1,
				      SCMP_A0_32(SCMP_CMP_LT, SANDBOX_FIRST_DRIVER_FD));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 2,
				      SCMP_A0_32(SCMP_CMP_GE, SANDBOX_FIRST_DRIVER_FD), SCMP_A1(SCMP_CMP_LT, TIOCSTI));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 2,
				      SCMP_A0_32(SCMP_CMP_GE, SANDBOX_FIRST_DRIVER_FD), SCMP_A1(SCMP_CMP_GT, TIOCSTI));
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	return rc;
}

/* Whether the effective set holds cap. */
static bool holds(int cap)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { 0 };

	return syscall(SYS_capget, &h, d) == 0 && (d[CAP_TO_INDEX(cap)].effective & CAP_TO_MASK(cap));
}

/*
 * The bounding set, while CAP_SETPCAP allows it (as root, before the ids
 * change). Without it the set stays: only an exec reads it, and the filter
 * refuses exec.
 */
static int drop_bounding(void)
{
	if (!holds(CAP_SETPCAP))
		return 0;
	for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0))
			return -1;
	return 0;
}

/*
 * All three ids, and no supplementary groups; then a setuid(0) that works
 * would mean there is a way back.
 */
static int drop_ids(uid_t uid, gid_t gid)
{
	uid_t r, e, s;

	if (setgroups(0, NULL) || setresgid(gid, gid, gid) || setresuid(uid, uid, uid))
		return -1;
	if (getresuid(&r, &e, &s) || r != uid || e != uid || s != uid || setuid(0) == 0) {
		errno = EPERM;
		return -1;
	}
	return 0;
}

/*
 * The ambient set (which a modeld started with capabilities for its own use
 * passes on to its workers), then the permitted, effective and inheritable
 * sets, checked to be empty. A kernel without ambient capabilities (before
 * 4.3) answers EINVAL: it has none to clear.
 */
static int drop_caps(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { 0 };

	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
		return -1;
	if (syscall(SYS_capset, &h, d) || syscall(SYS_capget, &h, d))
		return -1;
	for (size_t i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
		if (d[i].effective || d[i].permitted || d[i].inheritable) {
			errno = EPERM;
			return -1;
		}
	return 0;
}

/*
 * No way back. A change of credentials clears the parent-death signal, so
 * it is set again: a worker must never outlive modeld.
 */
int sandbox_drop_privileges(uid_t uid, gid_t gid, char *err, size_t errlen)
{
	pid_t parent = getppid();

	if (drop_bounding()) {
		snprintf(err, errlen, "cannot drop the capability bounding set: %s", strerror(errno));
		return -1;
	}
	if (uid != SANDBOX_KEEP_IDS && drop_ids(uid, gid)) {
		snprintf(err, errlen, "cannot drop to uid %d: %s", (int)uid, strerror(errno));
		return -1;
	}
	if (drop_caps()) {
		snprintf(err, errlen, "cannot drop capabilities: %s", strerror(errno));
		return -1;
	}
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent) {
		snprintf(err, errlen, "modeld is gone: %s", strerror(errno ? errno : ESRCH));
		return -1;
	}
	return 0;
}

int sandbox_enter(enum sandbox_stage stage, int debug, char *err, size_t errlen)
{
	static bool entered;	/* then no_new_privs, the rlimits and the debug trap are in place */
	int rc;

	if (!entered && debug && sandbox_debug_setup()) {
		snprintf(err, errlen, "cannot set up the seccomp debug trap: %s", strerror(errno));
		return -1;
	}
	if (!entered && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		snprintf(err, errlen, "no_new_privs: %s", strerror(errno));
		return -1;
	}
	if (!entered && sandbox_rlimits()) {
		snprintf(err, errlen, "setrlimit: %s", strerror(errno));
		return -1;
	}
	entered = true;
	rc = sandbox_filter(debug, stage);
	if (rc) {
		snprintf(err, errlen, "seccomp filter: %s", strerror(-rc));
		return -1;
	}
	return 0;
}
