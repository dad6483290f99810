/*
 * sandbox.c: seccomp allow-list (libseccomp), no_new_privs and rlimits.
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

/*
 * While loading, files may be opened but nothing made or cut short:
 * llama.cpp opens the model by its path (/proc/self/fd/N), and a device
 * driver may open its device files as it sets memory up. O_CREAT and
 * O_TRUNC are refused (EACCES).
 */
static int allow_opening(scmp_filter_ctx ctx)
{
	const scmp_datum_t making = O_CREAT | O_TRUNC;
	int rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(openat), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, making, 0));

	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 1,
				      SCMP_A2(SCMP_CMP_MASKED_EQ, making, O_CREAT));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(openat), 1,
				      SCMP_A2(SCMP_CMP_MASKED_EQ, O_TRUNC, O_TRUNC));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(open), 1, SCMP_A1(SCMP_CMP_MASKED_EQ, making, 0));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 1,
				      SCMP_A1(SCMP_CMP_MASKED_EQ, making, O_CREAT));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(open), 1,
				      SCMP_A1(SCMP_CMP_MASKED_EQ, O_TRUNC, O_TRUNC));
	if (rc == 0)	/* llama.cpp advises the kernel on how it will read the file it maps */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(fadvise64), 0);
	if (rc == 0)	/* the loaded worker's filter, which can only take more away */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(seccomp), 0);
	return rc;
}

/*
 * The filter: the architecture is checked by libseccomp (a call from another
 * ABI kills), then the denied and allowed calls above (while loading, files
 * may be opened for reading: allow_opening), then calls allowed with
 * arguments checked: clone only for a thread (a device driver may start
 * one), never a process. Anything else kills the worker (traps in debug).
 * TSYNC puts every thread of the worker, the driver's too, under it. The
 * loaded worker's filter stacks on the loading one: of the two answers to
 * a call, the kernel takes the stricter.
 */
static int sandbox_filter(int debug, bool loading)
{
	scmp_filter_ctx ctx = seccomp_init(debug ? SCMP_ACT_TRAP : SCMP_ACT_KILL_PROCESS);
	int rc = ctx ? seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) : -ENOMEM;

	if (rc == 0)	/* sandbox_enter set no_new_privs, and the filter refuses prctl */
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);

	for (size_t i = 0; rc == 0 && i < sizeof denied / sizeof denied[0]; i++)
		if (!loading || !opens(denied[i].nr))
			rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(denied[i].err), denied[i].nr, 0);
	if (rc == 0 && loading)
		rc = allow_opening(ctx);
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

/*
 * No way back: all three ids, and no supplementary groups. A change of
 * credentials clears the parent-death signal, so it is set again: a worker
 * must never outlive modeld.
 */
int sandbox_drop_ids(uid_t uid, gid_t gid, char *err, size_t errlen)
{
	uid_t r, e, s;
	pid_t parent = getppid();

	if (setgroups(0, NULL) || setresgid(gid, gid, gid) || setresuid(uid, uid, uid))
		goto fail;
	if (getresuid(&r, &e, &s) || r != uid || e != uid || s != uid || setuid(0) == 0) {
		errno = EPERM;
		goto fail;
	}
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "cannot drop to uid %d: %s", (int)uid, strerror(errno));
	return -1;
}

int sandbox_enter(bool loading, int debug, char *err, size_t errlen)
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
	rc = sandbox_filter(debug, loading);
	if (rc) {
		snprintf(err, errlen, "seccomp filter: %s", strerror(-rc));
		return -1;
	}
	return 0;
}
