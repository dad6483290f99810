/* The worker's sandbox, entered in a forked child: what it allows and what it stops. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>

#include <cmocka.h>

#include "../../worker/sandbox.h"

/* Runs fn in a sandboxed child; returns its wait status. */
static int in_sandbox(int (*fn)(void))
{
	pid_t pid = fork();
	if (pid == 0) {
		char err[128];
		if (sandbox_enter(SANDBOX_LOADED, 0, err, sizeof err) < 0)
			_exit(100);
		_exit(fn());
	}
	int status = 0;
	waitpid(pid, &status, 0);
	return status;
}

static void *thread_main(void *arg)
{
	return arg;
}

static int make_thread(void)
{
	pthread_t t;
	void *ret = NULL;
	if (pthread_create(&t, NULL, thread_main, (void *)7) != 0 || pthread_join(t, &ret) != 0)
		return 1;
	return ret == (void *)7 ? 0 : 2;
}

static int open_file(void)
{
	int fd = open("/etc/hostname", O_RDONLY);
	return fd < 0 && errno == EACCES ? 0 : 1;
}

static int make_socket(void)
{
	return socket(AF_INET, SOCK_STREAM, 0) < 0 && errno == EACCES ? 0 : 1;
}

static int make_process(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	return 3;	/* not reached: the filter kills the caller */
}

static int sv[2];	/* made before the sandbox, which allows no new socket */

/*
 * Terminal ioctls are refused, with their upper 32 bits set too; others
 * pass on a driver's descriptor (here, DRIVER_FD) and fail on the worker's
 * own 0 to 3 as on a file that is not a terminal.
 */
#define DRIVER_FD 40
static int tty_ioctl(void)
{
	char c = 'x';
	int n = -1;

	if (ioctl(DRIVER_FD, TIOCSTI, &c) == 0 || errno != EPERM)
		return 11;
	if (syscall(SYS_ioctl, DRIVER_FD, TIOCSTI | (1UL << 32), &c) == 0 || errno != EPERM)
		return 12;
	if (ioctl(DRIVER_FD, TIOCLINUX, &c) == 0 || errno != EPERM)
		return 13;
	if (ioctl(2, FIONREAD, &n) == 0 || errno != ENOTTY)
		return 15;
	return ioctl(DRIVER_FD, FIONREAD, &n) == 0 && n == 0 ? 0 : 14;
}

static int run_exec(void)
{
	execl("/bin/true", "true", (char *)NULL);
	return 4;
}

/*
 * What the NVIDIA driver was measured calling once its context exists
 * (allocations, pinned memory, copies, module loads, launches, frees, context
 * release), less rt_sigreturn, exit and exit_group, which cannot be called
 * on their own here. Every argument is -1: each call fails at once with
 * EBADF, EINVAL or EFAULT, but only the filter could kill the caller.
 */
static const struct { long nr; const char *name; } driver_calls[] = {
	{ SYS_read, "read" }, { SYS_write, "write" }, { SYS_close, "close" }, { SYS_fstat, "fstat" },
	{ SYS_poll, "poll" }, { SYS_lseek, "lseek" }, { SYS_mmap, "mmap" }, { SYS_mprotect, "mprotect" },
	{ SYS_munmap, "munmap" }, { SYS_brk, "brk" }, { SYS_rt_sigaction, "rt_sigaction" },
	{ SYS_rt_sigprocmask, "rt_sigprocmask" }, { SYS_ioctl, "ioctl" }, { SYS_pread64, "pread64" },
	{ SYS_sched_yield, "sched_yield" }, { SYS_mremap, "mremap" }, { SYS_madvise, "madvise" },
	{ SYS_nanosleep, "nanosleep" }, { SYS_getpid, "getpid" }, { SYS_gettid, "gettid" },
	{ SYS_futex, "futex" }, { SYS_restart_syscall, "restart_syscall" },
	{ SYS_clock_gettime, "clock_gettime" }, { SYS_clock_nanosleep, "clock_nanosleep" },
	{ SYS_epoll_wait, "epoll_wait" }, { SYS_newfstatat, "newfstatat" }, { SYS_ppoll, "ppoll" },
};
static long driver_call;

static int call_with_bad_args(void)
{
	syscall(driver_call, -1L, -1L, -1L, -1L, -1L, -1L);
	return 0;
}

static void test_the_drivers_calls_are_allowed(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof driver_calls / sizeof driver_calls[0]; i++) {
		driver_call = driver_calls[i].nr;
		int st = in_sandbox(call_with_bad_args);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			fail_msg("%s is refused by the sandbox", driver_calls[i].name);
	}
}

static void test_threads_are_allowed(void **state)
{
	(void)state;
	int st = in_sandbox(make_thread);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_files_and_sockets_fail_softly(void **state)
{
	(void)state;
	int st = in_sandbox(open_file);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	st = in_sandbox(make_socket);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_terminal_ioctls_are_refused(void **state)
{
	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(dup2(sv[0], DRIVER_FD), DRIVER_FD);
	int st = in_sandbox(tty_ioctl);
	close(DRIVER_FD);
	close(sv[0]);
	close(sv[1]);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/*
 * While loading: a file opens to be read, none is made or truncated, none
 * (a device's file neither) opens to be written, and no process or socket
 * is had; once loaded (the second filter), nothing opens.
 */
/* A directory of the test's own, with a file in it: a filter that failed would write only there. */
static char scratch[] = "/tmp/modeld-sandbox-XXXXXX";
static char made[sizeof scratch + 8], kept[sizeof scratch + 8];

static int load_then_serve(void)
{
	char err[128];
	int fd = open(kept, O_RDONLY);

	if (fd < 0)
		return 20;
	close(fd);
	if (open(made, O_WRONLY | O_CREAT, 0600) >= 0 || errno != EACCES)
		return 21;
	if (open(kept, O_RDONLY | O_TRUNC) >= 0 || errno != EACCES)
		return 22;
	if (socket(AF_INET, SOCK_STREAM, 0) >= 0 || errno != EACCES)
		return 23;
	if (open("/dev/null", O_RDWR) >= 0 || errno != EACCES)
		return 26;
	if (open("/dev/null", O_WRONLY | O_APPEND) >= 0 || errno != EACCES)
		return 27;
	if (syscall(SYS_open, "/dev/null", O_RDWR) >= 0 || errno != EACCES)
		return 28;
	if (sandbox_enter(SANDBOX_LOADED, 0, err, sizeof err) < 0)
		return 24;
	return open_file() ? 25 : 0;
}

/* Where the slot has a device, its driver's files open read-write; still nothing is made or cut short. */
static int load_on_a_device(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return 30;
	close(fd);
	if (open(made, O_RDWR | O_CREAT, 0600) >= 0 || errno != EACCES)
		return 31;
	if (open("/dev/null", O_WRONLY | O_TRUNC) >= 0 || errno != EACCES)
		return 32;
	return 0;
}

/* Runs fn in a child that entered stage; returns its wait status. */
static int in_stage(enum sandbox_stage stage, int (*fn)(void))
{
	pid_t pid = fork();
	if (pid == 0) {
		char err[128];
		_exit(sandbox_enter(stage, 0, err, sizeof err) < 0 ? 100 : fn());
	}
	int st = 0;
	waitpid(pid, &st, 0);
	return st;
}

static void test_loading_reads_files_and_the_loaded_worker_none(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(scratch));
	snprintf(made, sizeof made, "%s/made", scratch);
	snprintf(kept, sizeof kept, "%s/kept", scratch);
	int fd = open(kept, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0 && write(fd, "x", 1) == 1);
	close(fd);
	int st = in_stage(SANDBOX_LOADING, load_then_serve);
	struct stat sb;
	bool untouched = stat(kept, &sb) == 0 && sb.st_size == 1 && access(made, F_OK) != 0;
	unlink(made);
	unlink(kept);
	rmdir(scratch);
	assert_true(untouched);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	st = in_stage(SANDBOX_LOADING_DEVICE, load_on_a_device);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	st = in_stage(SANDBOX_LOADING, make_process);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
}

/* 0 when the calling process holds no capability in any set, else which set holds one. */
static int holds_nothing(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &h, d))
		return 40;
	for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
		if (d[i].effective || d[i].permitted || d[i].inheritable)
			return 41;
	for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1)
			return 42;
	for (int cap = 0; prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) >= 0; cap++)
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0) == 1)
			return 43;
	return 0;
}

/*
 * As root, with a capability in the ambient set too (as a service given one
 * passes it on): uid is kept or dropped to, and every capability is gone.
 */
static int drop_from_root(uid_t uid)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
	char err[128];

	if (syscall(SYS_capget, &h, d))
		return 50;
	d[CAP_TO_INDEX(CAP_NET_BIND_SERVICE)].inheritable |= CAP_TO_MASK(CAP_NET_BIND_SERVICE);
	if (syscall(SYS_capset, &h, d) || prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		return 51;
	if (sandbox_drop_privileges(uid, uid == SANDBOX_KEEP_IDS ? 0 : (gid_t)uid, err, sizeof err))
		return 52;
	if (getuid() != (uid == SANDBOX_KEEP_IDS ? 0 : uid))
		return 53;
	return holds_nothing();
}

static int keep_root(void)
{
	return drop_from_root(SANDBOX_KEEP_IDS);
}

static int drop_to_nobody(void)
{
	return drop_from_root(65534);
}

static void test_no_capability_is_kept(void **state)
{
	(void)state;
	if (geteuid() != 0)
		skip();		/* needs capabilities to drop */
	int (*const cases[])(void) = { keep_root, drop_to_nobody };
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(cases[i]());
		int st = 0;
		waitpid(pid, &st, 0);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
}

static void test_processes_and_exec_kill(void **state)
{
	(void)state;
	int st = in_sandbox(make_process);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
	st = in_sandbox(run_exec);
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_threads_are_allowed),
		cmocka_unit_test(test_the_drivers_calls_are_allowed),
		cmocka_unit_test(test_files_and_sockets_fail_softly),
		cmocka_unit_test(test_processes_and_exec_kill),
		cmocka_unit_test(test_terminal_ioctls_are_refused),
		cmocka_unit_test(test_loading_reads_files_and_the_loaded_worker_none),
		cmocka_unit_test(test_no_capability_is_kept),
	};
	return cmocka_run_group_tests_name("sandbox", tests, NULL, NULL);
}
