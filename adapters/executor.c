/*
 * ashcheck-exec: the native executor of ashcheck. One process per modelled process; it performs
 * operations with raw system calls and answers in a line protocol. libc only (glibc or musl), no
 * kernel headers: the binder and ashmem ABI is defined below. Little-endian targets with the
 * asm-generic ioctl encoding only (x86, x86_64, arm, aarch64).
 *
 * Build: cc -static -O2 -o ashcheck-exec executor.c     (or without -static; or musl-gcc)
 *        python -m ziglang cc -target aarch64-linux-musl -static -O2 -o ashcheck-exec executor.c
 *   ashcheck's build adds -DASHCHECK_EXEC_VERSION='"<16 hex digits of sha256(executor.c)>"': the
 *   `version` request answers it, and the binary holds "ashcheck-exec version <it>" verbatim, so
 *   that a cached binary can be checked before it is trusted.
 *
 * USAGE
 *   ashcheck-exec                          child mode: requests on fd 0, replies on fd 1
 *   ashcheck-exec --port SYNC              child mode, and also on its own port at fd 1000 (hub spawn)
 *   ashcheck-exec --hub [DEVICE]           hub mode: on fd 0/1, or on DEVICE opened O_RDWR
 *   ashcheck-exec --servicemanager DEVICE  binder context manager (prints "ok" when ready)
 *   (the dashes are optional: `hub`, `servicemanager` work too)
 *
 * PROTOCOL (line based; one request -> exactly one reply)
 *   A request is `<id> <verb> [args...]`; its reply is `<id> <status> [fields...]` with the same
 *   id, so a client can tell which request a reply answers, and that a line answers nothing it
 *   asked (a second reply, a stale one): a client treats that, and any reply that is not exactly
 *   this grammar ('\r' included), as the loss of the executor, never as the answer to another
 *   request. An id is 1 to 19 decimal digits, chosen by the client (ashcheck counts up); the
 *   executor only echoes it. A request that starts with a digit but has no valid id is answered
 *   with the id `-`. Without an id (the line starts with the verb: for people typing) the reply
 *   has none either.
 *   Tokens are separated by single spaces; a line ends with '\n' and may hold at most 1 MiB
 *   (a longer line is discarded and answered `bad`, under the id its first bytes name). Integers:
 *   decimal or 0x hex, may be negative, 64 bits (-2^63 ... 2^64-1; negatives are two's
 *   complement). Byte strings: lowercase hex, `-` for empty. Every reply field is printable
 *   ASCII. Statuses:
 *     ok [values...]   success
 *     err <errno>      the system call failed (errno in decimal)
 *     fault <signo>    SIGSEGV (11) or SIGBUS (7) while touching mapped memory; the executor
 *                      survives (sigsetjmp/siglongjmp); bytes stored before the fault stay stored
 *     bad <hex>        malformed or unknown request (hex of a message); the executor carries on
 *   (The examples below leave the ids out.)
 *
 * CHILD MODE. At start: PR_SET_PDEATHSIG(SIGKILL), exit if the parent is already gone (the parent
 * is $ASHCHECK_PARENT if set, else the parent at exec time), SIGPIPE ignored, exit(0) on EOF.
 * Between requests the executor holds only fds 0, 1, 2 (and its binder fd once opened): the
 * model predicts lowest-free fd numbers, so transient fds are closed before replying.
 *   ping                              -> ok
 *   version                           -> ok <version>   (ASHCHECK_EXEC_VERSION; "unversioned")
 *   info                              -> ok <pid> <uid> <page_size> <bits of long>
 *   fds                               -> ok <fd>...   (ascending; without the listing's own fd)
 *   setuid <uid>                      -> ok | err     (setgroups(0), setresgid, setresuid)
 *   memfd_region <namehex> <size>     -> ok <fd> | err   libcutils memfd mode: memfd_create(name,
 *                                        MFD_CLOEXEC|MFD_ALLOW_SEALING), ftruncate(size),
 *                                        F_ADD_SEALS(GROW|SHRINK); on failure: close, first errno
 *   ashmem_region <pathhex> <namehex> <size> -> ok <fd> | err   libcutils ashmem mode: open(path,
 *                                        O_RDWR|O_CLOEXEC), ASHMEM_SET_NAME, ASHMEM_SET_SIZE
 *   open <pathhex> <flags>            -> ok <fd>      (mode 0600 if O_CREAT)
 *   ioctl <fd> <cmd> <argkind> [arg]  -> ok <ret> | ok <ret> <hex> (inout) | err
 *        argkind: int <n> (the value itself) | in <hex> (pointer to a private copy) |
 *                 inout <hex> (same; the buffer after the call is returned) | null (NULL).
 *                 The copy is followed by 4 KiB of zeros, so that a driver reading a fixed-size
 *                 struct from a short argument never faults.
 *   fcntl <fd> <cmd> <arg>            -> ok <ret>
 *   ftruncate <fd> <len>              -> ok
 *   fallocate <fd> <mode> <off> <len> -> ok          (fallocate(2), mode the raw FALLOC_FL_* bits)
 *   fstat <fd>                        -> ok <st_mode> <st_size> <st_rdev> <st_dev> <st_ino>
 *   setrlimit <soft>                  -> ok | err     RLIMIT_NOFILE's soft limit (the hard one kept).
 *                                        The executor's own transient fds (/proc/self/fd, maps) are
 *                                        opened with the limit lifted to the hard one for that call,
 *                                        so only the modelled calls meet it; fds that come with a
 *                                        request beyond it are lost (MSG_CTRUNC): recvfds says EMFILE
 *   readlink <pathhex>                -> ok <hex>
 *   dup <fd> -> ok <newfd>   close <fd> -> ok   lseek <fd> <off> <whence> -> ok <pos>
 *   read <fd> <n> (n <= 1 MiB) -> ok <hex>      write <fd> <hex> -> ok <n>
 *   mmap <id> <fd> <length> <prot> <flags> <offset> [<near> <-1|1>] -> ok   (id 0..4095 names
 *                                        the mapping; an id in use is `bad`; flags are raw MAP_*
 *                                        bits). The address is only a hint, never MAP_FIXED: with
 *                                        <near> (a mapping id), the pages right below its start
 *                                        (-1) or right after its end (1), ignored if <near> is not
 *                                        in use; else the mapping's own slot of an arena that
 *                                        leaves free pages on both sides of every mapping (see
 *                                        placement()). The kernel takes another address when the
 *                                        range is not free.
 *   map_addr <id>                     -> ok <address> <length in whole pages>   (debugging)
 *   munmap <id> -> ok (the id is forgotten)    mprotect <id> <prot> -> ok
 *   load <id> <off> <len> (len <= 1 MiB) -> ok <hex> | fault <sig>
 *   store <id> <off> <hex>            -> ok | fault <sig>   (off+len outside the mapping, whose
 *                                        length is rounded up to whole pages as the kernel maps it:
 *                                        bad)
 *   maps_name <id>                    -> ok <hex>: the pathname column of the /proc/self/maps line
 *                                        holding the mapping's start (merged neighbours share a
 *                                        line; the kernel writes '\n' in names as \012); `-` if empty
 *   sendfds <fd>...                   -> ok with the fds attached (SCM_RIGHTS) to the reply on fd 1;
 *                                        err 9 if any fd is closed or O_PATH (binder's fget refuses
 *                                        them), then nothing is sent; err if fd 1 is no socket
 *   recvfds                           -> ok <fd>...: the fds that arrived (SCM_RIGHTS) with this
 *                                        line, installed lowest-free with FD_CLOEXEC
 *                                        (MSG_CMSG_CLOEXEC), as binder installs them. fds arriving
 *                                        with any other line are closed before it runs.
 *   exit                              -> ok, then exit(0)
 *   impl_load, impl                   a native implementation's calls (ashcheck_impl.h): see
 *                                        executor_impl.c
 *   Binder (raw protocol, Linux >= 4.20 semantics; see binder-fd.md §1):
 *   binder_open <devhex> <accept_fds 0|1> <proc_id> -> ok | err
 *        open O_RDWR|O_CLOEXEC, BINDER_VERSION == 8, mmap 1 MiB-8 KiB PROT_READ MAP_PRIVATE,
 *        SET_MAX_THREADS 0, BC_ENTER_LOOPER, then REGISTER (code 1) with the servicemanager
 *        (handle 0): a BINDER_TYPE_BINDER object for this process's node (flags ACCEPTS_FDS if
 *        asked) followed by the u32 proc_id. err ESRCH: no servicemanager (BR_DEAD_REPLY);
 *        err EPROTO: the registration failed.
 *   binder_send <dst_proc_id> <tf_accept_fds 0|1> <fd>...
 *        -> ok reply <fd>... | ok failed | ok dead | err <errno>
 *        LOOKUP (code 2) of dst with the servicemanager (cached, BC_ACQUIREd; a dead cached handle
 *        is looked up once more), then a BC_TRANSACTION (code 3) with one binder_fd_object per fd,
 *        TF_ACCEPT_FDS if asked. err ENOENT: dst is not registered.
 *   binder_recv <reply_fd>...         -> ok complete <fd>... | ok failed <fd>... | ok dead <fd>...
 *        waits for one BR_TRANSACTION (code 3), lists the fds it carried, BC_FREE_BUFFER, then
 *        BC_REPLY with one binder_fd_object per reply_fd; `complete` = BR_TRANSACTION_COMPLETE.
 *   BR_INCREFS/BR_ACQUIRE are answered (BC_INCREFS_DONE/BC_ACQUIRE_DONE) in every read loop.
 *
 * SERVICEMANAGER MODE. Becomes the context manager with BINDER_SET_CONTEXT_MGR_EXT and
 * FLAT_BINDER_FLAG_ACCEPTS_FDS (the 5.10 driver gives the legacy ioctl's node accept_fds = 0),
 * writes "ok\n" (or "err <errno>\n" and exits) on fd 1, then serves forever: REGISTER stores
 * proc_id -> handle (BC_ACQUIRE), LOOKUP replies a BINDER_TYPE_HANDLE object, or a TF_STATUS_CODE
 * reply holding -ENOENT. Dies with its parent (PDEATHSIG).
 *
 * HUB MODE. Reads `<proc> <id> <request>` lines and writes `<proc> <id> <reply>` lines. Requests
 * for a child are forwarded as `<id> <request>`; children run in parallel (poll), so one may
 * block in binder_recv while the others answer. The hub checks each line a child writes: it must
 * be the well-formed reply to the oldest request the child owes (a child answers in order). A
 * child that dies, or writes anything else, is killed, and answers each request it still owed
 * with `<proc> <id> lost <hex>`, and every later one the same way. The hub's own requests to its
 * children (spawn, xfer) carry ids of its own and are not forwarded. Hub requests use the tag `*`
 * (`* <id> <request>`; without the id, as in child mode, the reply has none):
 *   * ping                       -> * ok          (the transport's bare round trip)
 *   * version                    -> * ok <version>   (the children exec the same binary)
 *   * spawn <proc> <uid> [<port>] -> * ok <pid>   exec /proc/self/exe on a new socketpair; uid -1
 *                                   keeps root, else the child runs `setuid <uid>` first. With
 *                                   <port>, the name of a virtio-serial port (a VM gives several;
 *                                   err 16 while a live process has it), the child also serves
 *                                   requests on that port (held at fd 1000, which `fds` leaves
 *                                   out), answering each on the stream it came on: the host
 *                                   writes `<id> <request>` there and reads `<id> <reply>`, without
 *                                   the hub in between (each switch between guest processes is
 *                                   costly under TCG). A port holds what the host wrote for the
 *                                   last child there, and what that child wrote last: the new
 *                                   child writes `\n<sid> sync\n` (<sid>: the id of the spawn
 *                                   request) before any reply, and drops what it reads up to the
 *                                   line `<sid> sync` from the host, so each side knows where the
 *                                   new child's stream begins. When such a child dies or is
 *                                   killed, the hub says so with `<proc> - lost <hex>`: what it
 *                                   owed on its port is lost.
 *   * kill <proc>                -> * ok          SIGKILL + reap (err 3: no such process)
 *   * xfer <src> <dst> <fd>...   -> * ok <dst fd>... | * err <errno> | * lost <hex>   `sendfds`
 *                                   on src, then `recvfds` on dst with what arrived; the hub's
 *                                   copies closed; lost: src or dst is dead
 *   * servicemanager <devhex>    -> * ok | * err <errno>   a servicemanager child until exit
 *   * exit                       -> * ok, children killed, hub exits
 * The hub kills its children and exits when its input ends.
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINE (1u << 20)      /* longest request line, without its '\n' */
#define MAX_TOKENS 1100
#define MAX_FDS_PER_MSG 253      /* SCM_MAX_FD */
#define MAX_PENDING_FDS 512
#define MAX_MAPS 4096
#define MAX_ID 19                /* a request id: 1 to 19 decimal digits */
#define HUB_SYNC_TIMEOUT_MS 10000
#define PORT_FD 1000             /* where a child holds a port of its own: far above the fds it models */

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_ALLOW_SEALING
#define MFD_ALLOW_SEALING 0x0002U
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_GET_SEALS 1034
#endif
#ifndef F_SEAL_SHRINK
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif

/* asm-generic _IOC encoding (x86, arm, arm64) */
#define IOC(dir, type, nr, size) (((unsigned long)(dir) << 30) | ((unsigned long)(size) << 16) | \
                                  ((unsigned long)(type) << 8) | (unsigned long)(nr))
#define IOC_SIZE(cmd) (((cmd) >> 16) & 0x3fff)
#define ASHMEM_SET_NAME IOC(1, 0x77, 1, 256)
#define ASHMEM_SET_SIZE IOC(1, 0x77, 3, sizeof(size_t))  /* compat number on 32-bit ABIs */

/* ------------------------------------------------------------------------------------------ */
/* output: the reply being built                                                               */

static char *ob;
static size_t oblen, obcap;
static int reply_fds[MAX_FDS_PER_MSG];  /* sendfds: fds that travel with the reply */
static int nreply_fds;

static void ob_put(const void *p, size_t n)
{
	if (oblen + n + 2 > obcap) {
		size_t cap = obcap ? obcap : 4096;
		while (oblen + n + 2 > cap)
			cap *= 2;
		char *q = realloc(ob, cap);
		if (!q)
			abort();
		ob = q;
		obcap = cap;
	}
	memcpy(ob + oblen, p, n);
	oblen += n;
}

static void ob_str(const char *s) { ob_put(s, strlen(s)); }

/* " <n>" in decimal, n = -magnitude if negative: what " %lld" writes, without printf's cost (a
 * reply may carry several numbers, and every reply passes here) */
static void ob_num(uint64_t magnitude, int negative)
{
	char tmp[22], *p = tmp + sizeof tmp;  /* a space, a sign, 20 digits */
	do
		*--p = (char)('0' + magnitude % 10);
	while (magnitude /= 10);
	if (negative)
		*--p = '-';
	*--p = ' ';
	ob_put(p, (size_t)(tmp + sizeof tmp - p));
}

static void ob_u64(uint64_t v) { ob_num(v, 0); }
static void ob_i64(int64_t v) { ob_num(v < 0 ? -(uint64_t)v : (uint64_t)v, v < 0); }

static void ob_hex(const void *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *b = p;
	ob_put(" ", 1);
	if (n == 0) {
		ob_put("-", 1);
		return;
	}
	char chunk[512];
	for (size_t i = 0; i < n;) {
		size_t k = 0;
		for (; i < n && k < sizeof chunk; i++) {
			chunk[k++] = digits[b[i] >> 4];
			chunk[k++] = digits[b[i] & 15];
		}
		ob_put(chunk, k);
	}
}

/* The id of the request being answered: "" for an unframed request, "-" when it was unreadable. */
static char cur_id[MAX_ID + 1];
static size_t status_at;  /* where the status word begins in ob */

/* Starts a reply: the request's id, if it had one, then the status the caller writes. */
static void reply_start(void)
{
	oblen = 0;
	if (cur_id[0]) {
		ob_str(cur_id);
		ob_put(" ", 1);
	}
	status_at = oblen;
}

static int reply_is_ok(void) { return oblen >= status_at + 2 && memcmp(ob + status_at, "ok", 2) == 0; }
static void reply_ok(void) { reply_start(); ob_str("ok"); }
static void reply_err(int e) { reply_start(); ob_str("err"); ob_i64(e); }
static void reply_fault(int sig) { reply_start(); ob_str("fault"); ob_i64(sig); }

static void bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void bad(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	reply_start();
	ob_str("bad");
	ob_hex(msg, n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;
	while (n) {
		ssize_t k = write(fd, c, n);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		c += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Sends `buf` on `fd` with `fds` attached (SCM_RIGHTS) to its first byte. */
static int send_with_fds(int fd, const void *buf, size_t n, const int *fds, int nfds)
{
	union { struct cmsghdr align; char b[CMSG_SPACE(MAX_FDS_PER_MSG * sizeof(int))]; } u;
	struct iovec iov = { (void *)buf, n };
	struct msghdr mh;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (nfds > 0) {
		memset(&u, 0, sizeof u);
		mh.msg_control = u.b;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
	}
	ssize_t k;
	do
		k = sendmsg(fd, &mh, MSG_NOSIGNAL);
	while (k < 0 && errno == EINTR);
	if (k < 0)
		return -1;
	return write_all(fd, (const char *)buf + k, n - (size_t)k);
}

/* ------------------------------------------------------------------------------------------ */
/* input: a line reader that keeps SCM_RIGHTS fds with the line they came with                 */

struct reader {
	int fd;
	int sock;             /* try recvmsg; cleared on ENOTSOCK */
	size_t max;           /* longest line accepted */
	char *buf;
	size_t cap, start, len, scanned;
	int discarding;       /* inside an overlong line */
	char head[64];        /* the start of the overlong line last dropped (its id), NUL-terminated */
	size_t headlen;
	struct { size_t pos; int fd; } pend[MAX_PENDING_FDS];
	int npend;
	int linefds[MAX_PENDING_FDS];  /* the fds of the line last returned */
	int nlinefds;
};

static void reader_init(struct reader *r, int fd, size_t max)
{
	memset(r, 0, sizeof *r);
	r->fd = fd;
	r->sock = 1;
	r->max = max;
	r->cap = max + 1 + 65536;
	r->buf = malloc(r->cap);
	if (!r->buf)
		abort();
}

static void close_line_fds(struct reader *r)
{
	for (int i = 0; i < r->nlinefds; i++)
		if (r->linefds[i] >= 0)
			close(r->linefds[i]);
	r->nlinefds = 0;
}

/* Closes (or, with keep, moves to linefds) the pending fds that arrived at or before `upto`. */
static void take_pending(struct reader *r, size_t upto, int keep)
{
	int j = 0;
	for (int i = 0; i < r->npend; i++) {
		if (r->pend[i].pos <= upto) {
			if (keep && r->nlinefds < MAX_PENDING_FDS)
				r->linefds[r->nlinefds++] = r->pend[i].fd;
			else if (r->pend[i].fd >= 0)
				close(r->pend[i].fd);
		} else {
			r->pend[j++] = r->pend[i];
		}
	}
	r->npend = j;
}

/* One read (or recvmsg). Returns bytes read, 0 on EOF, -1 on error. */
static ssize_t reader_fill(struct reader *r)
{
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, r->len - r->start);
		for (int i = 0; i < r->npend; i++)
			r->pend[i].pos -= r->start;
		r->len -= r->start;
		r->start = 0;
	}
	char *dst = r->buf + r->len;
	size_t room = r->cap - r->len;
	ssize_t n;
	for (;;) {
		if (r->sock) {
			union { struct cmsghdr align; char b[CMSG_SPACE(MAX_FDS_PER_MSG * sizeof(int))]; } u;
			struct iovec iov = { dst, room };
			struct msghdr mh;
			memset(&mh, 0, sizeof mh);
			mh.msg_iov = &iov;
			mh.msg_iovlen = 1;
			mh.msg_control = u.b;
			mh.msg_controllen = sizeof u.b;
			n = recvmsg(r->fd, &mh, MSG_CMSG_CLOEXEC);
			if (n < 0 && errno == ENOTSOCK) {
				r->sock = 0;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n;
			/* A stream recvmsg stops right after the segment that carried fds, and the client sends
			 * a line and its fds in one sendmsg: so the fds belong to the last line that starts in
			 * this chunk (a trailing '\n' starts nothing). */
			size_t pos = r->len;
			for (ssize_t i = n - 2; i >= 0; i--)
				if (dst[i] == '\n') {
					pos = r->len + (size_t)i + 1;
					break;
				}
			for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
				if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
					continue;
				size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
				for (size_t i = 0; i < k; i++) {
					int fd;
					memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
					if (r->npend < MAX_PENDING_FDS) {
						r->pend[r->npend].pos = pos;
						r->pend[r->npend++].fd = fd;
					} else {
						close(fd);
					}
				}
			}
			/* fds the kernel could not install here (RLIMIT_NOFILE): the line's set is incomplete,
			 * marked by an fd of -1 among them */
			if ((mh.msg_flags & MSG_CTRUNC) && r->npend < MAX_PENDING_FDS) {
				r->pend[r->npend].pos = pos;
				r->pend[r->npend++].fd = -1;
			}
		} else {
			n = read(r->fd, dst, room);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return n;
		}
		r->len += (size_t)n;
		return n;
	}
}

enum { LINE_NONE, LINE_OK, LINE_OVERLONG };

/* Keeps the first bytes of a line about to be dropped: its id still gets an answer. */
static void keep_head(struct reader *r, const char *from, size_t n)
{
	r->headlen = n < sizeof r->head - 1 ? n : sizeof r->head - 1;
	memcpy(r->head, from, r->headlen);
	r->head[r->headlen] = 0;
}

/* The next complete line from the buffer (NUL-terminated in place; valid until reader_fill), its
 * fds in r->linefds. LINE_NONE: read more first. LINE_OVERLONG: a line over the limit was
 * dropped (with its fds); its first bytes are in r->head. */
static int reader_next(struct reader *r, char **line, size_t *n)
{
	char *from = r->buf + r->start + r->scanned;
	char *nl = memchr(from, '\n', r->len - r->start - r->scanned);
	if (!nl) {
		r->scanned = r->len - r->start;
		if (r->scanned > r->max) {  /* cannot be a valid line any more: drop what we have */
			if (!r->discarding)
				keep_head(r, r->buf + r->start, r->scanned);
			take_pending(r, r->len, 0);
			r->start = r->len = r->scanned = 0;
			r->discarding = 1;
		}
		return LINE_NONE;
	}
	size_t begin = r->start, end = (size_t)(nl - r->buf);
	r->start = end + 1;
	r->scanned = 0;
	close_line_fds(r);
	if (r->discarding || end - begin > r->max) {
		if (!r->discarding)
			keep_head(r, r->buf + begin, end - begin);
		r->discarding = 0;
		take_pending(r, end, 0);
		return LINE_OVERLONG;
	}
	take_pending(r, end, 1);
	*nl = 0;
	*line = r->buf + begin;
	*n = end - begin;
	return LINE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* argument parsing: each helper replies `bad` and returns -1 on a malformed argument          */

static int parse_num(const char *s, uint64_t *out)
{
	int neg = 0, base = 10;
	uint64_t v = 0;
	if (*s == '-') {
		neg = 1;
		s++;
	}
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s)
		return -1;
	for (; *s; s++) {
		unsigned d;
		if (*s >= '0' && *s <= '9')
			d = (unsigned)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned)(*s - 'A' + 10);
		else
			return -1;
		if (v > (UINT64_MAX - d) / (unsigned)base)
			return -1;
		v = v * (unsigned)base + d;
	}
	if (neg) {
		if (v > (uint64_t)1 << 63)
			return -1;
		v = (uint64_t)0 - v;
	}
	*out = v;
	return 0;
}

static int arg_u64(char **argv, int i, uint64_t *v)
{
	if (parse_num(argv[i], v) == 0)
		return 0;
	bad("argument %d of %s is not a 64-bit integer: %.40s", i, argv[0], argv[i]);
	return -1;
}

/* An int: anything in int's range, or a 32-bit unsigned value (0xffffffff is -1). */
static int arg_int(char **argv, int i, int *v)
{
	uint64_t u;
	if (arg_u64(argv, i, &u))
		return -1;
	int64_t s = (int64_t)u;
	if (s >= INT_MIN && s <= INT_MAX) {
		*v = (int)s;
		return 0;
	}
	if (u <= UINT32_MAX) {
		*v = (int)(uint32_t)u;
		return 0;
	}
	bad("argument %d of %s does not fit in 32 bits: %.40s", i, argv[0], argv[i]);
	return -1;
}

static int arg_bool(char **argv, int i, int *v)
{
	if (strcmp(argv[i], "0") == 0 || strcmp(argv[i], "1") == 0) {
		*v = argv[i][0] == '1';
		return 0;
	}
	bad("argument %d of %s must be 0 or 1", i, argv[0]);
	return -1;
}

/* Lowercase hex decoded in place; the bytes are followed by a NUL (the token is twice as long). */
static int arg_hex(char **argv, int i, uint8_t **p, size_t *n)
{
	char *s = argv[i];
	size_t len = strlen(s);
	*p = (uint8_t *)s;
	if (strcmp(s, "-") == 0) {
		*n = 0;
		s[0] = 0;
		return 0;
	}
	if (len % 2)
		goto fail;
	for (size_t k = 0; k < len; k += 2) {
		int v = 0;
		for (int h = 0; h < 2; h++) {
			char c = s[k + (size_t)h];
			int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
			if (d < 0)
				goto fail;
			v = v * 16 + d;
		}
		(*p)[k / 2] = (uint8_t)v;
	}
	*n = len / 2;
	(*p)[*n] = 0;
	return 0;
fail:
	bad("argument %d of %s is not lowercase hex or -", i, argv[0]);
	return -1;
}

/* The request id at the start of s[0..n): 1 to MAX_ID decimal digits, then a space or the end.
 * Writes it to id (MAX_ID + 1 bytes): "" when the request has none (it starts with a letter), "-"
 * when it starts with a digit but is no valid id. Returns how many bytes the id and its space
 * take, or -1 when it is malformed. */
static long read_id(const char *s, size_t n, char *id)
{
	size_t k = 0;
	id[0] = 0;
	if (n == 0 || s[0] < '0' || s[0] > '9')
		return 0;
	while (k < n && s[k] >= '0' && s[k] <= '9')
		k++;
	if (k > MAX_ID || (k < n && s[k] != ' ')) {
		strcpy(id, "-");
		return -1;
	}
	memcpy(id, s, k);
	id[k] = 0;
	return (long)(k < n ? k + 1 : k);
}

/* Takes the id off the front of a request into cur_id. -1 (after replying bad) if malformed. */
static int take_id(char **line, size_t *n)
{
	long k = read_id(*line, *n, cur_id);
	if (k < 0) {
		bad("a request id is 1 to %d decimal digits followed by a space", MAX_ID);
		return -1;
	}
	*line += k;
	*n -= (size_t)k;
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* process setup shared by every mode                                                          */

static pid_t parent_pid;

/* PDEATHSIG is per credentials: the kernel clears it when our uids change, so it is armed again
 * after setuid. The parent check closes the race with a parent that died before the prctl. */
static void arm_parent_death(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent_pid)
		_exit(0);
}

static void process_setup(void)
{
	const char *p = getenv("ASHCHECK_PARENT");
	parent_pid = p && *p ? (pid_t)atol(p) : getppid();
	arm_parent_death();
	signal(SIGPIPE, SIG_IGN);
}

static int drop_privileges(uid_t uid)
{
	if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
		return errno;
	arm_parent_death();
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* memory access that survives SIGSEGV and SIGBUS                                              */

static sigjmp_buf fault_jump;
static volatile sig_atomic_t fault_armed;

static void on_fault(int sig)
{
	if (fault_armed) {
		fault_armed = 0;
		siglongjmp(fault_jump, sig);
	}
	signal(sig, SIG_DFL);  /* not ours: a real crash, re-raised when the handler returns */
}

static void install_fault_handlers(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_fault;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

/* Byte loops through volatile pointers: memcpy could touch bytes in another order or width. */
static int copy_guarded(volatile uint8_t *dst, const volatile uint8_t *src, size_t n)
{
	int sig = sigsetjmp(fault_jump, 1);
	if (sig)
		return sig;
	fault_armed = 1;
	for (size_t i = 0; i < n; i++)
		dst[i] = src[i];
	fault_armed = 0;
	return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* child-mode operations                                                                       */

/* slot: the arena slot the mapping was placed in (see below), or -1 */
static struct { uint8_t *addr; size_t len; int used, slot; } maps[MAX_MAPS];
static struct reader in;
static struct reader port_in = { .fd = -1 };  /* the child's own port (PORT_FD), if the hub gave it one */
static int out_fd = 1;                        /* where the reply goes: fd 1, or that port */

#ifndef ASHCHECK_EXEC_VERSION
#define ASHCHECK_EXEC_VERSION "unversioned"  /* the build passes the hash of this source */
#endif
#define VERSION_PREFIX "ashcheck-exec version "
/* In the binary as one string, so that a cached binary can be checked without running it (`used`:
 * the compiler may not keep just the part that op_version reads). */
__attribute__((used)) static const char version_marker[] = VERSION_PREFIX ASHCHECK_EXEC_VERSION;

static void op_ping(int argc, char **argv) { (void)argc; (void)argv; reply_ok(); }

static void op_version(int argc, char **argv)
{
	(void)argc; (void)argv;
	reply_ok();
	ob_put(" ", 1);
	ob_str(version_marker + sizeof VERSION_PREFIX - 1);
}

static void op_info(int argc, char **argv)
{
	(void)argc; (void)argv;
	reply_ok();
	ob_i64(getpid());
	ob_u64(getuid());
	ob_i64(sysconf(_SC_PAGESIZE));
	ob_u64(sizeof(long) * 8);
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

/* RLIMIT_NOFILE as `setrlimit` left it; `limited` once one was asked. The executor's own transient
 * fds are opened between lift_fd_limit() and restore_fd_limit(). */
static struct rlimit nofile;
static int limited;

static void op_setrlimit(int argc, char **argv)
{
	(void)argc;
	uint64_t soft;
	struct rlimit r;
	if (arg_u64(argv, 1, &soft))
		return;
	if (getrlimit(RLIMIT_NOFILE, &r) < 0) {
		reply_err(errno);
		return;
	}
	r.rlim_cur = (rlim_t)soft;
	if (setrlimit(RLIMIT_NOFILE, &r) < 0) {
		reply_err(errno);
		return;
	}
	nofile = r;
	limited = 1;
	reply_ok();
}

static void lift_fd_limit(void)
{
	if (limited) {
		struct rlimit r = nofile;
		r.rlim_cur = r.rlim_max;
		setrlimit(RLIMIT_NOFILE, &r);
	}
}

static void restore_fd_limit(void)
{
	int e = errno;
	if (limited)
		setrlimit(RLIMIT_NOFILE, &nofile);
	errno = e;
}

static void op_fds(int argc, char **argv)
{
	(void)argc; (void)argv;
	lift_fd_limit();
	DIR *d = opendir("/proc/self/fd");
	restore_fd_limit();
	if (!d) {
		reply_err(errno);
		return;
	}
	int self = dirfd(d), n = 0, cap = 64, port = port_in.fd;
	int *fds = malloc(cap * sizeof *fds);
	struct dirent *e;
	while (fds && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9' || atoi(e->d_name) == self || atoi(e->d_name) == port)
			continue;
		if (n == cap) {
			int *q = realloc(fds, (cap *= 2) * sizeof *fds);
			if (!q)
				abort();
			fds = q;
		}
		fds[n++] = atoi(e->d_name);
	}
	closedir(d);
	if (!fds)
		abort();
	qsort(fds, (size_t)n, sizeof *fds, cmp_int);
	reply_ok();
	for (int i = 0; i < n; i++)
		ob_i64(fds[i]);
	free(fds);
}

static void op_setuid(int argc, char **argv)
{
	(void)argc;
	int uid;
	if (arg_int(argv, 1, &uid))
		return;
	int e = drop_privileges((uid_t)uid);
	if (e)
		reply_err(e);
	else
		reply_ok();
}

static void op_memfd_region(int argc, char **argv)
{
	(void)argc;
	uint8_t *name;
	size_t n;
	uint64_t size;
	if (arg_hex(argv, 1, &name, &n) || arg_u64(argv, 2, &size))
		return;
	int fd = (int)syscall(SYS_memfd_create, (const char *)name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) {
		reply_err(errno);
		return;
	}
	/* the size is ashmem_create_region's size_t: a 32-bit caller's is cut to 32 bits */
	if (ftruncate(fd, (off_t)(size_t)size) < 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK) < 0) {
		int e = errno;
		close(fd);
		reply_err(e);
		return;
	}
	reply_ok();
	ob_i64(fd);
}

static void op_ashmem_region(int argc, char **argv)
{
	(void)argc;
	uint8_t *path, *name;
	size_t plen, nlen;
	uint64_t size;
	if (arg_hex(argv, 1, &path, &plen) || arg_hex(argv, 2, &name, &nlen) || arg_u64(argv, 3, &size))
		return;
	char buf[256] = { 0 };  /* libcutils: strlcpy into char[ASHMEM_NAME_LEN] */
	memcpy(buf, name, nlen < sizeof buf - 1 ? nlen : sizeof buf - 1);
	int fd = open((const char *)path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		reply_err(errno);
		return;
	}
	if (syscall(SYS_ioctl, fd, ASHMEM_SET_NAME, buf) < 0 ||
	    syscall(SYS_ioctl, fd, ASHMEM_SET_SIZE, (unsigned long)size) < 0) {
		int e = errno;
		close(fd);
		reply_err(e);
		return;
	}
	reply_ok();
	ob_i64(fd);
}

static void op_open(int argc, char **argv)
{
	(void)argc;
	uint8_t *path;
	size_t n;
	int flags;
	if (arg_hex(argv, 1, &path, &n) || arg_int(argv, 2, &flags))
		return;
	int fd = open((const char *)path, flags, 0600);
	if (fd < 0) {
		reply_err(errno);
		return;
	}
	reply_ok();
	ob_i64(fd);
}

static void op_ioctl(int argc, char **argv)
{
	int fd;
	uint64_t cmd, v = 0;
	uint8_t *data = NULL, *copy = NULL;
	size_t n = 0;
	if (arg_int(argv, 1, &fd) || arg_u64(argv, 2, &cmd))
		return;
	const char *kind = argv[3];
	int with_arg = strcmp(kind, "int") == 0 || strcmp(kind, "in") == 0 || strcmp(kind, "inout") == 0;
	if (!with_arg && strcmp(kind, "null") != 0) {
		bad("ioctl argkind must be int, in, inout or null, not %.40s", kind);
		return;
	}
	if (argc != (with_arg ? 5 : 4)) {
		bad("ioctl %s takes %s", kind, with_arg ? "one argument" : "no argument");
		return;
	}
	if (strcmp(kind, "int") == 0) {
		if (arg_u64(argv, 4, &v))
			return;
	} else if (with_arg) {
		if (arg_hex(argv, 4, &data, &n))
			return;
		copy = calloc(n + 4096, 1);
		if (!copy)
			abort();
		memcpy(copy, data, n);
		v = (uintptr_t)copy;
	}
	long r = syscall(SYS_ioctl, fd, (unsigned long)cmd, (unsigned long)v);
	if (r == -1) {
		reply_err(errno);
	} else {
		reply_ok();
		ob_i64(r);
		if (strcmp(kind, "inout") == 0)
			ob_hex(copy, n);
	}
	free(copy);
}

static void op_fcntl(int argc, char **argv)
{
	(void)argc;
	int fd, cmd;
	uint64_t arg;
	if (arg_int(argv, 1, &fd) || arg_int(argv, 2, &cmd) || arg_u64(argv, 3, &arg))
		return;
	int r = fcntl(fd, cmd, (unsigned long)arg);
	if (r == -1) {
		reply_err(errno);
		return;
	}
	reply_ok();
	ob_i64(r);
}

static void op_ftruncate(int argc, char **argv)
{
	(void)argc;
	int fd;
	uint64_t len;
	if (arg_int(argv, 1, &fd) || arg_u64(argv, 2, &len))
		return;
	if (ftruncate(fd, (off_t)len) < 0)
		reply_err(errno);
	else
		reply_ok();
}

static void op_fallocate(int argc, char **argv)
{
	(void)argc;
	int fd, mode;
	uint64_t off, len;
	if (arg_int(argv, 1, &fd) || arg_int(argv, 2, &mode) || arg_u64(argv, 3, &off) || arg_u64(argv, 4, &len))
		return;
	if (fallocate(fd, mode, (off_t)off, (off_t)len) < 0)
		reply_err(errno);
	else
		reply_ok();
}

static void op_fstat(int argc, char **argv)
{
	(void)argc;
	int fd;
	struct stat st;
	if (arg_int(argv, 1, &fd))
		return;
	if (fstat(fd, &st) < 0) {
		reply_err(errno);
		return;
	}
	reply_ok();
	ob_u64(st.st_mode);
	ob_i64(st.st_size);
	ob_u64(st.st_rdev);
	ob_u64(st.st_dev);
	ob_u64(st.st_ino);
}

static void op_readlink(int argc, char **argv)
{
	(void)argc;
	uint8_t *path;
	size_t n;
	char buf[PATH_MAX + 1];
	if (arg_hex(argv, 1, &path, &n))
		return;
	ssize_t k = readlink((const char *)path, buf, sizeof buf);
	if (k < 0) {
		reply_err(errno);
		return;
	}
	reply_ok();
	ob_hex(buf, (size_t)k);
}

static void op_dup(int argc, char **argv)
{
	(void)argc;
	int fd;
	if (arg_int(argv, 1, &fd))
		return;
	int r = dup(fd);
	if (r < 0) {
		reply_err(errno);
		return;
	}
	reply_ok();
	ob_i64(r);
}

static void op_close(int argc, char **argv)
{
	(void)argc;
	int fd;
	if (arg_int(argv, 1, &fd))
		return;
	if (close(fd) < 0)
		reply_err(errno);
	else
		reply_ok();
}

static void op_lseek(int argc, char **argv)
{
	(void)argc;
	int fd, whence;
	uint64_t off;
	if (arg_int(argv, 1, &fd) || arg_u64(argv, 2, &off) || arg_int(argv, 3, &whence))
		return;
	off_t r = lseek(fd, (off_t)off, whence);
	if (r == (off_t)-1) {
		reply_err(errno);
		return;
	}
	reply_ok();
	ob_i64(r);
}

static void op_read(int argc, char **argv)
{
	(void)argc;
	int fd;
	uint64_t n;
	if (arg_int(argv, 1, &fd) || arg_u64(argv, 2, &n))
		return;
	if (n > MAX_LINE) {
		bad("read: at most %u bytes at once", MAX_LINE);
		return;
	}
	uint8_t *buf = malloc(n ? (size_t)n : 1);
	if (!buf)
		abort();
	ssize_t k = read(fd, buf, (size_t)n);
	if (k < 0)
		reply_err(errno);
	else {
		reply_ok();
		ob_hex(buf, (size_t)k);
	}
	free(buf);
}

static void op_write(int argc, char **argv)
{
	(void)argc;
	int fd;
	uint8_t *data;
	size_t n;
	if (arg_int(argv, 1, &fd) || arg_hex(argv, 2, &data, &n))
		return;
	ssize_t k = write(fd, data, n);
	if (k < 0) {
		reply_err(errno);
		return;
	}
	reply_ok();
	ob_i64(k);
}

static int arg_map(char **argv, int i, int *id, int in_use)
{
	uint64_t v;
	if (arg_u64(argv, i, &v))
		return -1;
	if (v >= MAX_MAPS) {
		bad("mapping id %.40s is not in 0..%d", argv[i], MAX_MAPS - 1);
		return -1;
	}
	if (maps[v].used != in_use) {
		bad("mapping id %d is %s", (int)v, in_use ? "not in use" : "already in use");
		return -1;
	}
	*id = (int)v;
	return 0;
}

/* Placement. Every mapping gets an address hint (never MAP_FIXED: the kernel may take another
 * address), so that a mapping asked to lie next to another one (`mmap ... <near_id> <-1|1>`)
 * usually finds that range free. Mapping id i is placed in slot i of an arena: SLOT_SIZE bytes
 * with its payload at SLOT_GAP, so SLOT_GAP bytes are free below and above every mapping. The
 * arena is reserved once (PROT_NONE, MAP_NORESERVE: no memory is committed) so that nothing else
 * lands in it; a slot's reservation is lifted while its mapping lives and restored with
 * MAP_FIXED_NOREPLACE when it goes (if something else, a hinted neighbour, lives there by then,
 * the slot stays open). A 32-bit process has little address space: a smaller arena there. */
#if UINTPTR_MAX > 0xffffffffu
#define SLOT_SIZE ((size_t)1 << 20)  /* payloads up to 512 KiB; 4 GiB of address space in all */
#define NSLOTS MAX_MAPS
#else
#define SLOT_SIZE ((size_t)1 << 18)  /* payloads up to 128 KiB; 64 MiB in all */
#define NSLOTS 256
#endif
#define SLOT_GAP (SLOT_SIZE / 4)
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define RESERVE_FLAGS (MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)

static uint8_t *arena;        /* NULL until the first mmap; MAP_FAILED if it could not be reserved */
static uint8_t slot_reserved[NSLOTS];

static uint8_t *slot_start(int slot) { return arena + (size_t)slot * SLOT_SIZE; }

static void slot_restore(int slot)
{
	void *want = slot_start(slot);
	void *got = mmap(want, SLOT_SIZE, PROT_NONE, RESERVE_FLAGS | MAP_FIXED_NOREPLACE, -1, 0);
	if (got == want)
		slot_reserved[slot] = 1;
	else if (got != MAP_FAILED)  /* a kernel before 4.17 took the flag as a hint, elsewhere */
		munmap(got, SLOT_SIZE);
}

/* The address hint for mapping `id` of `len` bytes (page-rounded): next to mapping `near` (side
 * -1: ending where it begins; 1: beginning where it ends), else the mapping's own slot (then
 * *slot is set and the slot's reservation lifted), else NULL. */
static void *placement(int id, size_t len, int near, int side, int *slot)
{
	*slot = -1;
	if (near >= 0 && maps[near].used) {
		uintptr_t at = (uintptr_t)maps[near].addr;
		if (side < 0)
			return at >= len ? (void *)(at - len) : NULL;
		return (void *)(at + maps[near].len);
	}
	if (!arena) {
		arena = mmap(NULL, SLOT_SIZE * NSLOTS, PROT_NONE, RESERVE_FLAGS, -1, 0);
		if (arena != MAP_FAILED)
			memset(slot_reserved, 1, sizeof slot_reserved);
	}
	if (arena == MAP_FAILED || id >= NSLOTS || len > SLOT_SIZE - 2 * SLOT_GAP)
		return NULL;
	if (slot_reserved[id] && munmap(slot_start(id), SLOT_SIZE) == 0)
		slot_reserved[id] = 0;
	*slot = id;
	return slot_start(id) + SLOT_GAP;
}

static void op_mmap(int argc, char **argv)
{
	int id, fd, prot, flags, near = -1, side = 0;
	uint64_t len, off;
	if (arg_map(argv, 1, &id, 0) || arg_int(argv, 2, &fd) || arg_u64(argv, 3, &len) ||
	    arg_int(argv, 4, &prot) || arg_int(argv, 5, &flags) || arg_u64(argv, 6, &off))
		return;
	if (argc == 9) {
		uint64_t v;
		if (arg_u64(argv, 7, &v) || arg_int(argv, 8, &side))
			return;
		if (v >= MAX_MAPS || (side != -1 && side != 1)) {
			bad("mmap: the hint is <mapping id 0..%d> <-1|1>", MAX_MAPS - 1);
			return;
		}
		near = (int)v;
	} else if (argc != 7) {
		bad("mmap takes 6 arguments, or 8 with a placement hint");
		return;
	}
	/* mmap's length is a size_t: a 32-bit process passes it cut to 32 bits, as any caller would */
	size_t n = (size_t)len;
	/* the kernel maps whole pages: load/store may touch all of them (the file's end is the SIGBUS) */
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t pages = n > SIZE_MAX - page ? 0 : (n + page - 1) / page * page;
	int slot = -1;
	void *hint = pages ? placement(id, pages, near, side, &slot) : NULL;
	void *p = mmap(hint, n, prot, flags, fd, (off_t)off);
	if (p == MAP_FAILED) {
		int e = errno;
		if (slot >= 0)
			slot_restore(slot);
		reply_err(e);
		return;
	}
	maps[id].addr = p;
	maps[id].len = pages;
	maps[id].used = 1;
	maps[id].slot = slot;
	reply_ok();
}

static void op_munmap(int argc, char **argv)
{
	(void)argc;
	int id;
	if (arg_map(argv, 1, &id, 1))
		return;
	if (munmap(maps[id].addr, maps[id].len) < 0) {
		reply_err(errno);
		return;
	}
	maps[id].used = 0;
	if (maps[id].slot >= 0)
		slot_restore(maps[id].slot);
	reply_ok();
}

/* Debugging and self-tests: where mapping id lies. */
static void op_map_addr(int argc, char **argv)
{
	(void)argc;
	int id;
	if (arg_map(argv, 1, &id, 1))
		return;
	reply_ok();
	ob_u64((uintptr_t)maps[id].addr);
	ob_u64(maps[id].len);
}

static void op_mprotect(int argc, char **argv)
{
	(void)argc;
	int id, prot;
	if (arg_map(argv, 1, &id, 1) || arg_int(argv, 2, &prot))
		return;
	if (mprotect(maps[id].addr, maps[id].len, prot) < 0)
		reply_err(errno);
	else
		reply_ok();
}

static int arg_range(char **argv, int id, uint64_t off, uint64_t n)
{
	if (off > maps[id].len || n > maps[id].len - off) {
		bad("%s: bytes %llu+%llu lie outside mapping %d (%llu bytes)", argv[0], (unsigned long long)off,
		    (unsigned long long)n, id, (unsigned long long)maps[id].len);
		return -1;
	}
	return 0;
}

static void op_load(int argc, char **argv)
{
	(void)argc;
	int id;
	uint64_t off, n;
	if (arg_map(argv, 1, &id, 1) || arg_u64(argv, 2, &off) || arg_u64(argv, 3, &n) || arg_range(argv, id, off, n))
		return;
	if (n > MAX_LINE) {
		bad("load: at most %u bytes at once", MAX_LINE);
		return;
	}
	uint8_t *buf = malloc(n ? (size_t)n : 1);
	if (!buf)
		abort();
	int sig = copy_guarded(buf, maps[id].addr + off, (size_t)n);
	if (sig) {
		reply_fault(sig);
	} else {
		reply_ok();
		ob_hex(buf, (size_t)n);
	}
	free(buf);
}

static void op_store(int argc, char **argv)
{
	(void)argc;
	int id;
	uint64_t off;
	uint8_t *data;
	size_t n;
	if (arg_map(argv, 1, &id, 1) || arg_u64(argv, 2, &off) || arg_hex(argv, 3, &data, &n) ||
	    arg_range(argv, id, off, n))
		return;
	int sig = copy_guarded(maps[id].addr + off, data, n);
	if (sig) {
		reply_fault(sig);
	} else {
		reply_ok();
	}
}

/* The pathname column (what follows the 5th field, inode, and the padding after it) of the line
 * whose range holds the mapping: the kernel merges adjacent mappings of the same file into one
 * line, so the mapping's own start may not begin a line. */
static void op_maps_name(int argc, char **argv)
{
	(void)argc;
	int id;
	if (arg_map(argv, 1, &id, 1))
		return;
	lift_fd_limit();
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	restore_fd_limit();
	if (fd < 0) {
		reply_err(errno);
		return;
	}
	size_t cap = 65536, n = 0;
	char *text = malloc(cap + 1);
	for (ssize_t k = 1; text && k > 0;) {
		if (n == cap) {
			char *q = realloc(text, (cap *= 2) + 1);
			if (!q)
				abort();
			text = q;
		}
		k = read(fd, text + n, cap - n);
		if (k < 0 && errno == EINTR)
			k = 1;
		else if (k > 0)
			n += (size_t)k;
		else if (k < 0) {
			int e = errno;
			close(fd);
			free(text);
			reply_err(e);
			return;
		}
	}
	close(fd);
	if (!text)
		abort();
	text[n] = 0;
	reply_err(ENOENT);  /* unless the line is found */
	for (char *line = text; *line;) {
		char *eol = strchr(line, '\n');
		if (!eol)
			eol = line + strlen(line);
		char *dash;
		uintptr_t start = (uintptr_t)strtoull(line, &dash, 16);
		uintptr_t end = *dash == '-' ? (uintptr_t)strtoull(dash + 1, NULL, 16) : start;
		uintptr_t addr = (uintptr_t)maps[id].addr;
		if (start <= addr && addr < end) {
			char *p = line;
			for (int f = 0; f < 5; f++) {
				while (p < eol && *p != ' ')
					p++;
				while (p < eol && *p == ' ')
					p++;
			}
			reply_ok();
			ob_hex(p, (size_t)(eol - p));
			break;
		}
		line = *eol ? eol + 1 : eol;
	}
	free(text);
}

static void op_sendfds(int argc, char **argv)
{
	int fds[MAX_FDS_PER_MSG];
	int n = argc - 1;
	if (n > MAX_FDS_PER_MSG) {
		bad("sendfds: at most %d fds", MAX_FDS_PER_MSG);
		return;
	}
	for (int i = 0; i < n; i++)
		if (arg_int(argv, i + 1, &fds[i]))
			return;
	for (int i = 0; i < n; i++) {
		int fl = fcntl(fds[i], F_GETFL);
		if (fl < 0 || (fl & O_PATH)) {
			reply_err(EBADF);
			return;
		}
	}
	memcpy(reply_fds, fds, (size_t)n * sizeof(int));
	nreply_fds = n;
	reply_ok();
}

static void op_recvfds(int argc, char **argv)
{
	(void)argc; (void)argv;
	for (int i = 0; i < in.nlinefds; i++)
		if (in.linefds[i] < 0) {  /* some did not fit under RLIMIT_NOFILE: keep none, as binder */
			close_line_fds(&in);
			reply_err(EMFILE);
			return;
		}
	reply_ok();
	for (int i = 0; i < in.nlinefds; i++)
		ob_i64(in.linefds[i]);
	in.nlinefds = 0;  /* they are the caller's now */
}

static void op_exit(int argc, char **argv);  /* below: it needs send_reply */

/* ------------------------------------------------------------------------------------------ */
/* binder                                                                                      */

#define BINDER_VM_SIZE ((1u << 20) - 8192)
#define BINDER_WRITE_READ IOC(3, 'b', 1, 48)
#define BINDER_SET_MAX_THREADS IOC(1, 'b', 5, 4)
#define BINDER_VERSION IOC(3, 'b', 9, 4)
#define BINDER_SET_CONTEXT_MGR_EXT IOC(1, 'b', 13, 24)
#define BINDER_CURRENT_PROTOCOL_VERSION 8

#define BC_TRANSACTION 0x40406300u
#define BC_REPLY 0x40406301u
#define BC_FREE_BUFFER 0x40086303u
#define BC_ACQUIRE 0x40046305u
#define BC_RELEASE 0x40046306u
#define BC_INCREFS_DONE 0x40106308u
#define BC_ACQUIRE_DONE 0x40106309u
#define BC_ENTER_LOOPER 0x0000630cu
#define BC_DEAD_BINDER_DONE 0x40086310u

#define BR_ERROR 0x80047200u
#define BR_TRANSACTION 0x80407202u
#define BR_TRANSACTION_SEC_CTX 0x80487202u
#define BR_REPLY 0x80407203u
#define BR_DEAD_REPLY 0x00007205u
#define BR_TRANSACTION_COMPLETE 0x00007206u
#define BR_INCREFS 0x80107207u
#define BR_ACQUIRE 0x80107208u
#define BR_DEAD_BINDER 0x8008720fu
#define BR_FAILED_REPLY 0x00007211u
#define BR_FROZEN_REPLY 0x00007212u
#define BR_ONEWAY_SPAM_SUSPECT 0x00007213u
#define BR_TRANSACTION_PENDING_FROZEN 0x00007214u
/* Everything else (BR_NOOP, BR_SPAWN_LOOPER, BR_RELEASE, BR_DECREFS, BR_FINISHED,
 * BR_CLEAR_DEATH_NOTIFICATION_DONE, freeze notifications, ...) needs no answer here and is
 * skipped by the payload size encoded in its code. */

#define BINDER_TYPE_BINDER 0x73622a85u
#define BINDER_TYPE_HANDLE 0x73682a85u
#define BINDER_TYPE_FD 0x66642a85u
#define FLAT_BINDER_FLAG_ACCEPTS_FDS 0x100u
#define TF_ONE_WAY 0x01u
#define TF_STATUS_CODE 0x08u
#define TF_ACCEPT_FDS 0x10u

/* servicemanager transaction codes, and the one code executors send each other */
#define SM_REGISTER 1
#define SM_LOOKUP 2
#define CODE_FDS 3

struct binder_write_read {
	uint64_t write_size, write_consumed, write_buffer;
	uint64_t read_size, read_consumed, read_buffer;
};

/* binder_transaction_data: 64 bytes on every ABI (binder_uintptr_t is 64-bit) */
struct btd {
	uint64_t target;  /* the handle in the low 32 bits (little endian), or the node ptr */
	uint64_t cookie;
	uint32_t code, flags;
	int32_t sender_pid;
	uint32_t sender_euid;
	uint64_t data_size, offsets_size, buffer, offsets;
};

/* flat_binder_object and binder_fd_object (fd in the low 32 bits of `binder`) */
struct fbo {
	uint32_t type, flags;
	uint64_t binder, cookie;
};

_Static_assert(sizeof(struct btd) == 64, "binder_transaction_data is 64 bytes");
_Static_assert(sizeof(struct fbo) == 24, "flat_binder_object is 24 bytes");
_Static_assert(sizeof(struct binder_write_read) == 48, "binder_write_read is 48 bytes");

static int bfd = -1;
static void *bmap;
static char node_anchor;  /* its address is this process's node ptr and cookie */
#define NODE ((uint64_t)(uintptr_t)&node_anchor)

/* The command stream for the next BINDER_WRITE_READ: packed records, written in order. */
static uint8_t *bc;
static size_t bclen, bccap;

static void bc_put(const void *p, size_t n)
{
	if (bclen + n > bccap) {
		bccap = bccap ? bccap * 2 + n : 4096 + n;
		bc = realloc(bc, bccap);
		if (!bc)
			abort();
	}
	memcpy(bc + bclen, p, n);
	bclen += n;
}

static void bc_u32(uint32_t v) { bc_put(&v, 4); }
static void bc_u64(uint64_t v) { bc_put(&v, 8); }

/* `data` and `offs` must stay valid until the next binder_io. */
static void bc_txn(uint32_t cmd, uint32_t handle, uint32_t code, uint32_t flags, const void *data,
                   size_t size, const uint64_t *offs, size_t noffs)
{
	struct btd t;
	memset(&t, 0, sizeof t);
	t.target = handle;
	t.code = code;
	t.flags = flags;
	t.data_size = size;
	t.offsets_size = noffs * 8;
	t.buffer = (uintptr_t)data;
	t.offsets = (uintptr_t)offs;
	bc_u32(cmd);
	bc_put(&t, sizeof t);
}

/* Writes the pending commands and reads into rbuf (read_size 0: write only). Both consumed
 * counters start at zero: the driver takes them as where to resume. */
static int binder_io(void *rbuf, size_t rsize, size_t *got)
{
	struct binder_write_read b;
	size_t done = 0;
	for (;;) {
		memset(&b, 0, sizeof b);
		b.write_size = bclen - done;
		b.write_buffer = (uintptr_t)(bc + done);
		b.read_size = rsize;
		b.read_buffer = (uintptr_t)rbuf;
		if (syscall(SYS_ioctl, bfd, BINDER_WRITE_READ, &b) == 0)
			break;
		if (errno != EINTR) {
			bclen = 0;
			return -errno;
		}
		done += (size_t)b.write_consumed;
		if (b.read_consumed)
			break;
	}
	bclen = 0;
	*got = (size_t)b.read_consumed;
	return 0;
}

static int binder_flush(void)
{
	size_t got;
	return bclen ? binder_io(NULL, 0, &got) : 0;
}

enum { WANT_REPLY = 1, WANT_TXN = 2, WANT_COMPLETE = 4 };

struct bres {
	uint32_t cmd;  /* BR_REPLY, BR_TRANSACTION, BR_TRANSACTION_COMPLETE, BR_FAILED_REPLY, ... */
	int32_t error; /* BR_ERROR's value */
	struct btd tr;
};

/* Refuses a transaction nobody here waits for: free it, and answer a synchronous one with a
 * status reply, so that its sender is not left blocked. */
static void refuse_transaction(const struct btd *tr)
{
	static const int32_t status = -EPROTO;
	bc_u32(BC_FREE_BUFFER);
	bc_u64(tr->buffer);
	if (!(tr->flags & TF_ONE_WAY))
		bc_txn(BC_REPLY, 0, 0, TF_STATUS_CODE, &status, sizeof status, NULL, 0);
}

/* Writes the pending commands, then reads until a record in `want` arrives, answering reference
 * count requests on the way. Housekeeping commands queued while reading stay in `bc`, to go
 * ahead of the caller's next commands. Returns 0 or -errno. */
static int binder_loop(int want, struct bres *res)
{
	uint64_t rbuf[64];  /* 512 bytes: the driver needs >= 80 free to hand out a record */
	for (;;) {
		size_t got;
		int r = binder_io(rbuf, sizeof rbuf, &got);
		if (r)
			return r;
		int found = 0;
		const uint8_t *p = (const uint8_t *)rbuf;
		for (size_t pos = 0; pos + 4 <= got;) {
			uint32_t cmd;
			memcpy(&cmd, p + pos, 4);
			const uint8_t *payload = p + pos + 4;
			size_t size = IOC_SIZE(cmd);
			if (pos + 4 + size > got)
				break;
			pos += 4 + size;
			uint64_t ptr_cookie[2];
			struct btd tr;
			switch (cmd) {
			case BR_INCREFS:
			case BR_ACQUIRE:
				memcpy(ptr_cookie, payload, 16);
				bc_u32(cmd == BR_INCREFS ? BC_INCREFS_DONE : BC_ACQUIRE_DONE);
				bc_put(ptr_cookie, 16);
				break;
			case BR_DEAD_BINDER:
				bc_u32(BC_DEAD_BINDER_DONE);
				bc_put(payload, 8);
				break;
			case BR_TRANSACTION:
			case BR_TRANSACTION_SEC_CTX:
				memcpy(&tr, payload, sizeof tr);
				if ((want & WANT_TXN) && !found) {
					found = 1;
					res->cmd = BR_TRANSACTION;
					res->tr = tr;
				} else {
					refuse_transaction(&tr);
				}
				break;
			case BR_REPLY:
				memcpy(&tr, payload, sizeof tr);
				if ((want & WANT_REPLY) && !found) {
					found = 1;
					res->cmd = cmd;
					res->tr = tr;
				} else {
					bc_u32(BC_FREE_BUFFER);
					bc_u64(tr.buffer);
				}
				break;
			case BR_TRANSACTION_COMPLETE:
			case BR_ONEWAY_SPAM_SUSPECT:
			case BR_TRANSACTION_PENDING_FROZEN:
				if ((want & WANT_COMPLETE) && !found) {
					found = 1;
					res->cmd = BR_TRANSACTION_COMPLETE;
				}
				break;
			case BR_DEAD_REPLY:
			case BR_FAILED_REPLY:
			case BR_FROZEN_REPLY:
				if ((want & (WANT_REPLY | WANT_COMPLETE)) && !found) {
					found = 1;
					res->cmd = cmd == BR_FROZEN_REPLY ? BR_FAILED_REPLY : cmd;
				}
				break;
			case BR_ERROR:
				if (!found) {
					found = 1;
					res->cmd = cmd;
					memcpy(&res->error, payload, 4);
				}
				break;
			default:
				break;
			}
		}
		if (found)
			return 0;
	}
}

/* The fd numbers in the fd objects of a received transaction (in our binder mapping). */
static int txn_fds(const struct btd *tr, int *fds, int max)
{
	const uint8_t *data = (const uint8_t *)(uintptr_t)tr->buffer;
	const uint8_t *offs = (const uint8_t *)(uintptr_t)tr->offsets;
	int n = 0;
	for (uint64_t i = 0; i < tr->offsets_size / 8 && n < max; i++) {
		uint64_t off;
		uint32_t type, fd;
		memcpy(&off, offs + i * 8, 8);
		if (off > tr->data_size || tr->data_size - off < sizeof(struct fbo))
			continue;
		memcpy(&type, data + off, 4);
		if (type != BINDER_TYPE_FD)
			continue;
		memcpy(&fd, data + off + 8, 4);
		fds[n++] = (int)fd;
	}
	return n;
}

/* open + version + mmap + max threads: what both clients and the servicemanager do. */
static int binder_setup(const char *dev)
{
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return errno;
	int32_t version = 0;
	uint32_t zero = 0;
	int e = 0;
	if (syscall(SYS_ioctl, fd, BINDER_VERSION, &version) < 0)
		e = errno;
	else if (version != BINDER_CURRENT_PROTOCOL_VERSION)
		e = EPROTO;
	void *m = MAP_FAILED;
	if (!e && (m = mmap(NULL, BINDER_VM_SIZE, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
		e = errno;
	if (!e && syscall(SYS_ioctl, fd, BINDER_SET_MAX_THREADS, &zero) < 0)
		e = errno;
	if (e) {
		if (m != MAP_FAILED)
			munmap(m, BINDER_VM_SIZE);
		close(fd);
		return e;
	}
	bfd = fd;
	bmap = m;
	return 0;
}

static void binder_teardown(void)
{
	munmap(bmap, BINDER_VM_SIZE);
	close(bfd);
	bfd = -1;
	bclen = 0;
}

static void op_binder_open(int argc, char **argv)
{
	(void)argc;
	uint8_t *dev;
	size_t n;
	int accept;
	uint64_t proc_id;
	if (arg_hex(argv, 1, &dev, &n) || arg_bool(argv, 2, &accept) || arg_u64(argv, 3, &proc_id))
		return;
	if (bfd >= 0) {
		bad("binder_open: binder is already open");
		return;
	}
	int e = binder_setup((const char *)dev);
	if (e) {
		reply_err(e);
		return;
	}
	uint8_t data[sizeof(struct fbo) + 4];
	struct fbo node = { BINDER_TYPE_BINDER, accept ? FLAT_BINDER_FLAG_ACCEPTS_FDS : 0, NODE, NODE };
	uint32_t id = (uint32_t)proc_id;
	uint64_t off0 = 0;
	memcpy(data, &node, sizeof node);
	memcpy(data + sizeof node, &id, 4);
	/* Without the looper state a 5.10 thread never takes process work: binder_recv needs it. */
	bc_u32(BC_ENTER_LOOPER);
	bc_txn(BC_TRANSACTION, 0, SM_REGISTER, 0, data, sizeof data, &off0, 1);
	struct bres r;
	int rc = binder_loop(WANT_REPLY, &r);
	e = rc ? -rc : r.cmd == BR_DEAD_REPLY ? ESRCH : r.cmd == BR_ERROR ? -r.error : r.cmd == BR_REPLY ? 0 : EPROTO;
	if (!e && (r.tr.flags & TF_STATUS_CODE))
		e = EPROTO;
	if (!rc && r.cmd == BR_REPLY) {
		bc_u32(BC_FREE_BUFFER);
		bc_u64(r.tr.buffer);
	}
	if (!e)
		e = -binder_flush();
	if (e) {
		binder_teardown();
		reply_err(e);
		return;
	}
	reply_ok();
}

/* proc_id -> handle, as the servicemanager told us (each handle BC_ACQUIREd) */
static struct { uint32_t proc, handle; } handles[MAX_MAPS];
static int nhandles;

static int cached_handle(uint32_t proc)
{
	for (int i = 0; i < nhandles; i++)
		if (handles[i].proc == proc)
			return i;
	return -1;
}

static void forget_handle(int i)
{
	bc_u32(BC_RELEASE);
	bc_u32(handles[i].handle);
	handles[i] = handles[--nhandles];
}

/* Asks the servicemanager for proc's handle. Returns 0 (and *handle) or an errno. */
static int lookup(uint32_t proc, uint32_t *handle)
{
	bc_txn(BC_TRANSACTION, 0, SM_LOOKUP, 0, &proc, sizeof proc, NULL, 0);
	struct bres r;
	int rc = binder_loop(WANT_REPLY, &r);
	if (rc)
		return -rc;
	if (r.cmd == BR_DEAD_REPLY)
		return ESRCH;
	if (r.cmd == BR_ERROR)
		return -r.error;
	if (r.cmd != BR_REPLY)
		return EPROTO;
	const struct btd *t = &r.tr;
	const uint8_t *data = (const uint8_t *)(uintptr_t)t->buffer;
	uint64_t off0 = 1;
	struct fbo obj = { 0, 0, 0, 0 };
	if (t->offsets_size >= 8)
		memcpy(&off0, (const void *)(uintptr_t)t->offsets, 8);
	if (off0 == 0 && t->data_size >= sizeof obj)
		memcpy(&obj, data, sizeof obj);
	int e = 0;
	if (t->flags & TF_STATUS_CODE)
		e = ENOENT;
	else if (obj.type == BINDER_TYPE_BINDER)
		e = EINVAL;  /* our own node: a process cannot transact with itself */
	else if (obj.type != BINDER_TYPE_HANDLE)
		e = EPROTO;
	if (!e) {
		/* acquire before the free: freeing the reply drops the reference it carried */
		*handle = (uint32_t)obj.binder;
		bc_u32(BC_ACQUIRE);
		bc_u32(*handle);
		if (nhandles < MAX_MAPS) {
			handles[nhandles].proc = proc;
			handles[nhandles++].handle = *handle;
		}
	}
	bc_u32(BC_FREE_BUFFER);
	bc_u64(t->buffer);
	return e;
}

/* One binder_fd_object per fd, at offsets 0, 24, 48, ... */
static struct fbo *fd_objects(const int *fds, int n, uint64_t **offs)
{
	struct fbo *objs = calloc((size_t)n + 1, sizeof *objs);
	*offs = calloc((size_t)n + 1, sizeof **offs);
	if (!objs || !*offs)
		abort();
	for (int i = 0; i < n; i++) {
		objs[i].type = BINDER_TYPE_FD;
		objs[i].binder = (uint32_t)fds[i];
		(*offs)[i] = (uint64_t)i * sizeof *objs;
	}
	return objs;
}

static int arg_fds(char **argv, int first, int argc, int *fds)
{
	for (int i = first; i < argc; i++)
		if (arg_int(argv, i, &fds[i - first]))
			return -1;
	return 0;
}

static void op_binder_send(int argc, char **argv)
{
	uint64_t dst;
	int accept, fds[MAX_TOKENS];
	int n = argc - 3;
	if (arg_u64(argv, 1, &dst) || arg_bool(argv, 2, &accept) || arg_fds(argv, 3, argc, fds))
		return;
	if (bfd < 0) {
		bad("binder_send: binder_open first");
		return;
	}
	uint64_t *offs;
	struct fbo *objs = fd_objects(fds, n, &offs);
	struct bres r;
	int rc = 0;
	for (int attempt = 0; attempt < 2; attempt++) {
		int i = cached_handle((uint32_t)dst);
		uint32_t handle = 0;
		if (i >= 0) {
			handle = handles[i].handle;
		} else {
			int e = lookup((uint32_t)dst, &handle);
			if (e) {
				rc = -e;
				break;
			}
			attempt = 1;  /* a fresh handle: no second try */
		}
		bc_txn(BC_TRANSACTION, handle, CODE_FDS, accept ? TF_ACCEPT_FDS : 0, objs,
		       (size_t)n * sizeof *objs, offs, (size_t)n);
		rc = binder_loop(WANT_REPLY, &r);
		if (rc || r.cmd != BR_DEAD_REPLY || attempt == 1)
			break;
		/* dst died; a process with its proc_id may have registered since: ask again */
		forget_handle(cached_handle((uint32_t)dst));
	}
	if (rc) {
		reply_err(-rc);
	} else if (r.cmd == BR_REPLY) {
		int got[MAX_TOKENS];
		int k = txn_fds(&r.tr, got, MAX_TOKENS);
		bc_u32(BC_FREE_BUFFER);
		bc_u64(r.tr.buffer);
		reply_ok();
		ob_str(" reply");
		for (int i = 0; i < k; i++)
			ob_i64(got[i]);
	} else if (r.cmd == BR_ERROR) {
		reply_err(-r.error);
	} else {
		reply_ok();
		ob_str(r.cmd == BR_DEAD_REPLY ? " dead" : " failed");
	}
	rc = binder_flush();
	if (rc && reply_is_ok())
		reply_err(-rc);
	free(objs);
	free(offs);
}

static void op_binder_recv(int argc, char **argv)
{
	int fds[MAX_TOKENS];
	int n = argc - 1;
	if (arg_fds(argv, 1, argc, fds))
		return;
	if (bfd < 0) {
		bad("binder_recv: binder_open first");
		return;
	}
	struct bres r;
	int rc;
	for (;;) {
		rc = binder_loop(WANT_TXN, &r);
		if (rc || r.tr.code == CODE_FDS)
			break;
		refuse_transaction(&r.tr);
	}
	if (rc) {
		reply_err(-rc);
		return;
	}
	int got[MAX_TOKENS];
	int k = txn_fds(&r.tr, got, MAX_TOKENS);
	uint64_t *offs;
	struct fbo *objs = fd_objects(fds, n, &offs);
	bc_u32(BC_FREE_BUFFER);  /* libbinder's order: free the request, then reply */
	bc_u64(r.tr.buffer);
	const char *how = " oneway";
	if (!(r.tr.flags & TF_ONE_WAY)) {
		bc_txn(BC_REPLY, 0, 0, 0, objs, (size_t)n * sizeof *objs, offs, (size_t)n);
		rc = binder_loop(WANT_COMPLETE, &r);
		how = rc ? NULL : r.cmd == BR_TRANSACTION_COMPLETE ? " complete" : r.cmd == BR_DEAD_REPLY ? " dead" : " failed";
	}
	if (!rc)
		rc = binder_flush();
	free(objs);
	free(offs);
	if (rc) {
		reply_err(-rc);
		return;
	}
	reply_ok();
	ob_str(how);
	for (int i = 0; i < k; i++)
		ob_i64(got[i]);
}

/* --- servicemanager mode --- */

static void sm_serve(const struct btd *tr)
{
	static struct { uint32_t proc, handle; } reg[MAX_MAPS];
	static int nreg;
	static struct fbo answer;
	static uint64_t off0;
	static int32_t status;
	const uint8_t *data = (const uint8_t *)(uintptr_t)tr->buffer;
	uint64_t first = 1;
	uint32_t proc = 0;
	struct fbo obj = { 0, 0, 0, 0 };
	int found = -1;
	if (tr->offsets_size >= 8)
		memcpy(&first, (const void *)(uintptr_t)tr->offsets, 8);
	status = -EINVAL;
	if (tr->code == SM_REGISTER && first == 0 && tr->data_size >= sizeof obj + 4) {
		memcpy(&obj, data, sizeof obj);
		memcpy(&proc, data + sizeof obj, 4);
	} else if (tr->code == SM_LOOKUP && tr->data_size >= 4) {
		memcpy(&proc, data, 4);
	}
	for (int i = 0; i < nreg; i++)
		if (reg[i].proc == proc)
			found = i;
	if (tr->code == SM_REGISTER && obj.type == BINDER_TYPE_HANDLE) {
		/* keep the new node alive (before the free drops the buffer's reference), drop the old */
		bc_u32(BC_ACQUIRE);
		bc_u32((uint32_t)obj.binder);
		if (found >= 0) {
			bc_u32(BC_RELEASE);
			bc_u32(reg[found].handle);
		} else if (nreg < MAX_MAPS) {
			found = nreg++;
		}
		if (found >= 0) {
			reg[found].proc = proc;
			reg[found].handle = (uint32_t)obj.binder;
		}
		status = 0;
	} else if (tr->code == SM_LOOKUP && tr->data_size >= 4) {
		status = found >= 0 ? 0 : -ENOENT;
	}
	bc_u32(BC_FREE_BUFFER);
	bc_u64(tr->buffer);
	if (tr->flags & TF_ONE_WAY)
		return;
	if (tr->code == SM_LOOKUP && status == 0) {
		answer = (struct fbo){ BINDER_TYPE_HANDLE, 0, reg[found].handle, 0 };
		off0 = 0;
		bc_txn(BC_REPLY, 0, 0, 0, &answer, sizeof answer, &off0, 1);
	} else if (status == 0) {
		bc_txn(BC_REPLY, 0, 0, 0, &status, 0, NULL, 0);
	} else {
		bc_txn(BC_REPLY, 0, 0, TF_STATUS_CODE, &status, sizeof status, NULL, 0);
	}
}

static int servicemanager_main(const char *dev)
{
	process_setup();
	int e = binder_setup(dev);
	struct fbo mgr = { BINDER_TYPE_BINDER, FLAT_BINDER_FLAG_ACCEPTS_FDS, NODE, NODE };
	if (!e && syscall(SYS_ioctl, bfd, BINDER_SET_CONTEXT_MGR_EXT, &mgr) < 0)
		e = errno;
	char line[32] = "ok\n";
	if (e)
		snprintf(line, sizeof line, "err %d\n", e);
	write_all(1, line, strlen(line));
	if (e)
		return 1;
	bc_u32(BC_ENTER_LOOPER);
	for (;;) {
		struct bres r;
		int rc = binder_loop(WANT_TXN, &r);
		if (rc) {
			fprintf(stderr, "ashcheck-exec servicemanager: BINDER_WRITE_READ failed: %s\n", strerror(-rc));
			return 1;
		}
		sm_serve(&r.tr);
	}
}

/* native implementations (ashcheck_impl.h): impl_load, impl                                   */
#include "executor_impl.c"

/* ------------------------------------------------------------------------------------------ */
/* child mode                                                                                  */

struct op {
	const char *name;
	int min, max;  /* argument count (without the name); max -1: unlimited */
	void (*fn)(int argc, char **argv);
};

static const struct op ops[] = {
	{ "ping", 0, 0, op_ping },
	{ "version", 0, 0, op_version },
	{ "info", 0, 0, op_info },
	{ "fds", 0, 0, op_fds },
	{ "setuid", 1, 1, op_setuid },
	{ "memfd_region", 2, 2, op_memfd_region },
	{ "ashmem_region", 3, 3, op_ashmem_region },
	{ "open", 2, 2, op_open },
	{ "ioctl", 3, 4, op_ioctl },
	{ "fcntl", 3, 3, op_fcntl },
	{ "ftruncate", 2, 2, op_ftruncate },
	{ "fallocate", 4, 4, op_fallocate },
	{ "fstat", 1, 1, op_fstat },
	{ "setrlimit", 1, 1, op_setrlimit },
	{ "readlink", 1, 1, op_readlink },
	{ "dup", 1, 1, op_dup },
	{ "close", 1, 1, op_close },
	{ "lseek", 3, 3, op_lseek },
	{ "read", 2, 2, op_read },
	{ "write", 2, 2, op_write },
	{ "mmap", 6, 8, op_mmap },
	{ "map_addr", 1, 1, op_map_addr },
	{ "munmap", 1, 1, op_munmap },
	{ "mprotect", 2, 2, op_mprotect },
	{ "load", 3, 3, op_load },
	{ "store", 3, 3, op_store },
	{ "maps_name", 1, 1, op_maps_name },
	{ "sendfds", 0, MAX_FDS_PER_MSG, op_sendfds },
	{ "recvfds", 0, 0, op_recvfds },
	{ "exit", 0, 0, op_exit },
	{ "binder_open", 3, 3, op_binder_open },
	{ "binder_send", 2, -1, op_binder_send },
	{ "binder_recv", 0, -1, op_binder_recv },
	/* native implementations: executor_impl.c */
	{ "impl_load", 1, 1, op_impl_load },
	{ "impl", 1, 4, op_impl },
};

/* Splits on single spaces. Returns the token count, or -1 after replying bad. */
static int tokenize(char *line, size_t n, char **argv)
{
	if (memchr(line, 0, n)) {
		bad("a NUL byte in the request");
		return -1;
	}
	if (n == 0) {
		bad("an empty request");
		return -1;
	}
	int argc = 0;
	for (char *p = line;;) {
		char *sp = strchr(p, ' ');
		if (sp == p || (!sp && !*p)) {
			bad("an empty token (tokens are separated by single spaces)");
			return -1;
		}
		if (argc == MAX_TOKENS) {
			bad("more than %d tokens", MAX_TOKENS);
			return -1;
		}
		argv[argc++] = p;
		if (!sp)
			return argc;
		*sp = 0;
		p = sp + 1;
	}
}

/* Runs the request `line` (its id already taken) through `table`; every failure replies bad. */
static void dispatch(const struct op *table, size_t count, char *line, size_t n)
{
	static char *argv[MAX_TOKENS + 1];
	int argc = tokenize(line, n, argv);
	if (argc < 0)
		return;
	argv[argc] = NULL;
	for (size_t i = 0; i < count; i++) {
		if (strcmp(table[i].name, argv[0]) != 0)
			continue;
		int args = argc - 1, min = table[i].min, max = table[i].max;
		if (args < min || (max >= 0 && args > max)) {
			if (max == min)
				bad("%s takes %d arguments, not %d", argv[0], min, args);
			else if (max < 0)
				bad("%s takes %d or more arguments, not %d", argv[0], min, args);
			else
				bad("%s takes %d to %d arguments, not %d", argv[0], min, max, args);
			return;
		}
		table[i].fn(argc, argv);
		return;
	}
	bad("unknown request %.60s", argv[0]);
}

static void send_reply(void)
{
	ob_put("\n", 1);
	int rc = 0;
	if (nreply_fds > 0) {
		rc = send_with_fds(out_fd, ob, oblen, reply_fds, nreply_fds);
		nreply_fds = 0;
		if (rc < 0 && (errno == ENOTSOCK || errno == EINVAL || errno == EOPNOTSUPP)) {
			reply_err(errno);  /* nothing was sent: fd 1 cannot carry fds */
			ob_put("\n", 1);
			rc = write_all(out_fd, ob, oblen);
		}
	} else {
		rc = write_all(out_fd, ob, oblen);
	}
	if (rc < 0)
		_exit(0);  /* the other end is gone */
	oblen = 0;
}

static void op_exit(int argc, char **argv)
{
	(void)argc; (void)argv;
	reply_ok();
	send_reply();
	_exit(0);
}

/* Serves the complete requests buffered in r, replying on the stream they came on. A port starts
 * with whatever the host wrote for an earlier child there: everything up to the line
 * `<sync> sync` is dropped (*sync is then NULL). */
static void serve(struct reader *r, const char **sync)
{
	char *line;
	size_t n;
	int k;
	out_fd = r == &in ? 1 : r->fd;
	while ((k = reader_next(r, &line, &n)) != LINE_NONE) {
		if (*sync && r != &in) {
			size_t s = strlen(*sync);
			if (k == LINE_OK && n == s + 5 && memcmp(line, *sync, s) == 0 && strcmp(line + s, " sync") == 0)
				*sync = NULL;
			continue;
		}
		if (k == LINE_OVERLONG) {
			read_id(r->head, r->headlen, cur_id);  /* so the refusal still names the request */
			bad("a request longer than %u bytes (discarded)", MAX_LINE);
		} else if (take_id(&line, &n) == 0) {
			/* fds that came with anything but recvfds are closed first: they must not take the
			 * fd numbers the request is about to allocate */
			if (strcmp(line, "recvfds") != 0)
				close_line_fds(r);
			dispatch(ops, sizeof ops / sizeof ops[0], line, n);
		}
		close_line_fds(r);
		send_reply();
	}
}

/* Child mode: requests on fd 0 (from the hub or the host), and, with `sync`, also on a
 * virtio-serial port of its own at PORT_FD (from the host, skipping the hub): the port's first
 * line, written before any reply, is `<sync> sync` after a newline that ends whatever a dead
 * predecessor left half-written, so that the host can drop everything before it. */
static int child_main(const char *sync)
{
	process_setup();
	install_fault_handlers();
	reader_init(&in, 0, MAX_LINE);
	if (sync) {
		char hello[MAX_ID + 8];
		int len = snprintf(hello, sizeof hello, "\n%s sync\n", sync);
		reader_init(&port_in, PORT_FD, MAX_LINE);
		if (write_all(PORT_FD, hello, (size_t)len) < 0)
			return 1;
	}
	for (;;) {
		struct pollfd p[2] = { { 0, POLLIN, 0 }, { port_in.fd, POLLIN, 0 } };
		if (port_in.fd >= 0 && poll(p, 2, -1) < 0) {  /* (without a port, fd 0 is read at once) */
			if (errno == EINTR)
				continue;
			return 1;
		}
		for (int i = 0; i < 2; i++) {
			struct reader *r = i ? &port_in : &in;
			if (r->fd < 0 || (port_in.fd >= 0 && !p[i].revents))
				continue;
			ssize_t got = reader_fill(r);
			if (got <= 0)
				return got == 0 ? 0 : 1;
			serve(r, &sync);
		}
	}
}

/* ------------------------------------------------------------------------------------------ */
/* hub mode                                                                                    */

#define MAX_CHILDREN 256

/* A request forwarded to a child and not answered yet: its reply must carry this id. */
struct owed {
	char id[MAX_ID + 1];  /* "" for an unframed request, "-" for one with a malformed id */
	int hub;              /* asked by the hub itself (spawn, xfer): the reply is not forwarded */
};

struct child {
	char tag[32];
	pid_t pid;
	int fd;               /* -1 once dead */
	int port;             /* 1 + its index in ports[] if it has a port of its own (0: none) */
	struct owed *owed;    /* oldest first: a child answers in order */
	int nowed, capowed;
	char why[160];        /* how it died */
	char *buf;
	size_t len, cap, scanned;
};

static struct child kids[MAX_CHILDREN];
static int nkids;
static int hub_out;
static pid_t sm_pid = -1;
static int sm_fd = -1;
static unsigned long long hub_serial;  /* ids of the hub's own requests to its children */

static int hub_out_gone;
static void hub_cleanup(void);

static void hub_write(const char *tag, const char *text, size_t n)
{
	if (hub_out_gone)
		return;
	size_t t = strlen(tag);
	char *line = malloc(t + n + 2);
	if (!line)
		abort();
	memcpy(line, tag, t);
	line[t] = ' ';
	memcpy(line + t + 1, text, n);
	line[t + 1 + n] = '\n';
	int rc = write_all(hub_out, line, t + n + 2);
	free(line);
	if (rc < 0) {  /* nobody is listening any more: end, and take the children along */
		hub_out_gone = 1;
		hub_cleanup();
		_exit(0);
	}
}

/* Writes the reply in `ob` (built by reply_ok/bad/...) for `tag`. */
static void hub_reply(const char *tag)
{
	hub_write(tag, ob, oblen);
	oblen = 0;
}

/* `<tag> <id> lost <hex>`: request `id` went to a child that is gone. Leaves cur_id as it was. */
static void hub_lost(const char *tag, const char *id, const char *why)
{
	char saved[sizeof cur_id];
	memcpy(saved, cur_id, sizeof saved);
	snprintf(cur_id, sizeof cur_id, "%s", id);
	reply_start();
	ob_str("lost");
	ob_hex(why, strlen(why));
	hub_reply(tag);
	memcpy(cur_id, saved, sizeof saved);
}

static struct child *find_child(const char *tag)
{
	for (int i = 0; i < nkids; i++)
		if (strcmp(kids[i].tag, tag) == 0)
			return &kids[i];
	return NULL;
}

static void reap(pid_t pid, char *why, size_t n)
{
	int st = 0;
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (why) {
		if (WIFSIGNALED(st))
			snprintf(why, n, "killed by signal %d", WTERMSIG(st));
		else
			snprintf(why, n, "exited with status %d", WEXITSTATUS(st));
	}
}

static void owe(struct child *c, const char *id, int hub)
{
	if (c->nowed == c->capowed) {
		int cap = c->capowed ? c->capowed * 2 : 16;
		struct owed *q = realloc(c->owed, (size_t)cap * sizeof *q);
		if (!q)
			abort();
		c->owed = q;
		c->capowed = cap;
	}
	snprintf(c->owed[c->nowed].id, sizeof c->owed[0].id, "%s", id);
	c->owed[c->nowed++].hub = hub;
}

/* The child is gone (or is being removed, or broke the protocol): reap it and answer `lost` to
 * what it still owed. `reason` (NULL: how it exited) is what later requests to it are told. */
static void child_dead(struct child *c, const char *reason)
{
	if (c->fd < 0)
		return;
	close(c->fd);
	c->fd = -1;
	char status[64];
	reap(c->pid, status, sizeof status);
	snprintf(c->why, sizeof c->why, "%s", reason ? reason : status);
	char msg[256];
	snprintf(msg, sizeof msg, "process %s (pid %d) %s%s", c->tag, (int)c->pid, c->why,
	         reason ? "" : " before answering");
	for (int i = 0; i < c->nowed; i++)
		if (!c->owed[i].hub)
			hub_lost(c->tag, c->owed[i].id, msg);
	if (c->port)  /* what it owes on its port, only the host knows: tell it */
		hub_lost(c->tag, "-", msg);
	c->nowed = 0;
	free(c->buf);
	c->buf = NULL;
	c->len = c->cap = c->scanned = 0;
}

static void remove_child(struct child *c)
{
	child_dead(c, "was killed");
	free(c->owed);
	*c = kids[--nkids];
}

/* One read from the child; fds received are kept in fds (if given) or closed. */
static ssize_t child_read(struct child *c, int *fds, int *nfds, int max)
{
	if (c->cap - c->len < 65536) {
		size_t cap = c->cap ? c->cap * 2 : 65536;
		if (cap > 8 * (size_t)MAX_LINE)  /* the longest reply is a 1 MiB read in hex */
			return -1;
		char *q = realloc(c->buf, cap);
		if (!q)
			abort();
		c->buf = q;
		c->cap = cap;
	}
	union { struct cmsghdr align; char b[CMSG_SPACE(MAX_FDS_PER_MSG * sizeof(int))]; } u;
	struct iovec iov = { c->buf + c->len, c->cap - c->len };
	struct msghdr mh;
	memset(&mh, 0, sizeof mh);
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.b;
	mh.msg_controllen = sizeof u.b;
	ssize_t k;
	do
		k = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
	while (k < 0 && errno == EINTR);
	for (struct cmsghdr *h = CMSG_FIRSTHDR(&mh); k >= 0 && h; h = CMSG_NXTHDR(&mh, h)) {
		if (h->cmsg_level != SOL_SOCKET || h->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0; i < (h->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(h) + i * sizeof(int), sizeof fd);
			if (fds && *nfds < max)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
	if (k > 0)
		c->len += (size_t)k;
	return k;
}

/* Takes the first complete line of the child's output (malloc'd, NUL-terminated, '\n' removed).
 * Each byte is searched for '\n' once, however many reads a long line takes. */
static int child_line(struct child *c, char **out, size_t *n)
{
	char *nl = c->len > c->scanned ? memchr(c->buf + c->scanned, '\n', c->len - c->scanned) : NULL;
	if (!nl) {
		c->scanned = c->len;
		return 0;
	}
	*n = (size_t)(nl - c->buf);
	*out = malloc(*n + 1);
	if (!*out)
		abort();
	memcpy(*out, c->buf, *n);
	(*out)[*n] = 0;
	c->len -= *n + 1;
	memmove(c->buf, nl + 1, c->len);
	c->scanned = 0;
	return 1;
}

/* Whether `line` is a well-formed reply to the request with id `id`:
 * `[<id> ](ok|err|fault|bad)[ <field>]...`, fields of printable ASCII, single spaces. */
static int reply_wellformed(const char *line, size_t n, const char *id)
{
	size_t k = strlen(id);
	if (k) {
		if (n <= k || memcmp(line, id, k) != 0 || line[k] != ' ')
			return 0;
		line += k + 1;
		n -= k + 1;
	}
	size_t w = 0;
	while (w < n && line[w] != ' ')
		w++;
	if (!((w == 2 && memcmp(line, "ok", 2) == 0) || (w == 3 && memcmp(line, "err", 3) == 0) ||
	      (w == 3 && memcmp(line, "bad", 3) == 0) || (w == 5 && memcmp(line, "fault", 5) == 0)))
		return 0;
	for (size_t i = w; i < n; i++) {
		unsigned char ch = (unsigned char)line[i];
		if (ch == ' ' ? i + 1 == n || line[i + 1] == ' ' : ch < 0x21 || ch > 0x7e)
			return 0;
	}
	return 1;
}

/* The child's next reply (malloc'd), if a complete one is buffered, and whom it answers. A line
 * that is not the well-formed reply to the oldest request the child owes (a second reply, a
 * wrong id, garbage) ends the child: its requests are answered `lost`, never with a reply meant
 * for another one. Returns 0 when there is none (or the child was ended). */
static int child_reply(struct child *c, char **out, size_t *n, struct owed *whom)
{
	char *line;
	size_t len;
	if (c->fd < 0 || !child_line(c, &line, &len))
		return 0;
	if (c->nowed == 0 || !reply_wellformed(line, len, c->owed[0].id)) {
		char why[160];
		snprintf(why, sizeof why, "broke the protocol with %s: %.60s",
		         c->nowed ? "a reply out of turn or malformed" : "a line nobody asked for", line);
		free(line);
		child_dead(c, why);
		return 0;
	}
	*whom = c->owed[0];
	memmove(c->owed, c->owed + 1, (size_t)--c->nowed * sizeof *c->owed);
	*out = line;
	*n = len;
	return 1;
}

/* Forwards the child's complete replies to the hub's output. */
static void child_forward(struct child *c)
{
	char *line;
	size_t n;
	struct owed whom;
	while (child_reply(c, &line, &n, &whom)) {
		if (!whom.hub)  /* (the hub's own requests are answered while it waits: never here) */
			hub_write(c->tag, line, n);
		free(line);
	}
}

static void child_send(struct child *c, const char *line, const int *fds, int nfds)
{
	size_t n = strlen(line);
	char *msg = malloc(n + 1);
	if (!msg)
		abort();
	memcpy(msg, line, n);
	msg[n] = '\n';
	int rc = send_with_fds(c->fd, msg, n + 1, fds, nfds);
	free(msg);
	if (rc < 0)
		child_dead(c, NULL);
}

/* A request made by the hub itself: send it (under an id of the hub's), forward replies the child
 * still owed for earlier requests, and return its own reply without the id (malloc'd) and the fds
 * that came with it. NULL when the child died or did not answer in time (then it is killed). */
static char *child_call(struct child *c, const char *line, const int *fds, int nfds, int *rfds, int *nrfds)
{
	char id[MAX_ID + 1];
	snprintf(id, sizeof id, "%llu", ++hub_serial % 10000000000000000000ULL);
	size_t idlen = strlen(id), n = strlen(line);
	char *framed = malloc(idlen + 1 + n + 1);
	if (!framed)
		abort();
	memcpy(framed, id, idlen);
	framed[idlen] = ' ';
	memcpy(framed + idlen + 1, line, n + 1);
	*nrfds = 0;
	owe(c, id, 1);
	child_send(c, framed, fds, nfds);
	free(framed);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		char *reply;
		size_t len;
		struct owed whom;
		while (child_reply(c, &reply, &len, &whom)) {
			if (whom.hub) {  /* ours: the child answers in order, so it is this one */
				memmove(reply, reply + idlen + 1, len - idlen);
				return reply;
			}
			hub_write(c->tag, reply, len);
			free(reply);
		}
		if (c->fd < 0)
			return NULL;
		clock_gettime(CLOCK_MONOTONIC, &t);
		long left = HUB_SYNC_TIMEOUT_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
		struct pollfd p = { c->fd, POLLIN, 0 };
		int k = left > 0 ? poll(&p, 1, (int)left) : 0;
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			child_dead(c, "did not answer the hub in time and was killed");
			return NULL;
		}
		if (child_read(c, rfds, nrfds, MAX_FDS_PER_MSG) <= 0)
			child_dead(c, NULL);
	}
}

/* Starts this binary with `fd` as its fd 0 and 1, and `port` (unless -1) as its PORT_FD. */
static pid_t spawn_self(int fd, int port, char *const *args)
{
	pid_t hub = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		char parent[32];
		snprintf(parent, sizeof parent, "%d", (int)hub);
		setenv("ASHCHECK_PARENT", parent, 1);
		dup2(fd, 0);
		dup2(fd, 1);
		if (port >= 0)
			dup2(port, PORT_FD);
		signal(SIGPIPE, SIG_DFL);
		/* Under user-mode emulation without binfmt_misc (the adb self-tests run the Android
		 * binaries with qemu-user), the emulator must start the child: ASHCHECK_EXEC_WRAPPER
		 * names it, and the binary goes as its argument. Unset everywhere else. */
		const char *wrapper = getenv("ASHCHECK_EXEC_WRAPPER");
		if (wrapper && *wrapper) {
			char self[4096];
			ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
			char *wrapped[8] = { (char *)wrapper, self };
			int k = 2;
			for (int i = 1; args[i] && k < 7; i++)
				wrapped[k++] = args[i];
			wrapped[k] = NULL;
			if (n > 0) {
				self[n] = 0;
				execv(wrapper, wrapped);
			}
			_exit(127);
		}
		execv("/proc/self/exe", args);
		_exit(127);
	}
	return pid;
}

/* A `lost` reply to a hub request that needed a dead child. */
static void reply_lost(const struct child *c)
{
	reply_start();
	ob_str("lost");
	ob_hex(c->why, strlen(c->why));
}

/* The process ports opened so far. Each stays open in the hub and is lent to every child spawned
 * on it: qemu does not look at a port's host socket again when the guest opens the port anew, so
 * what the host wrote before is not delivered until something else wakes qemu's main loop (seen:
 * a request left unread for good). Open all along, the port is always read. */
static struct { char name[33]; int fd; } ports[32];
static int nports;

/* Opens the virtio-serial port named `name`: the /dev/vport<N>p<M> whose sysfs `name` it is (what
 * udev would link as /dev/virtio-ports/<name>; the guest has no udev). -1 with errno if none. */
static int open_port(const char *name)
{
	DIR *d = opendir("/sys/class/virtio-ports");
	struct dirent *e;
	int fd = -1, found = 0;
	while (d && !found && (e = readdir(d))) {
		char path[300], got[64];
		snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
		int nf = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t k = nf < 0 ? -1 : read(nf, got, sizeof got - 1);
		if (nf >= 0)
			close(nf);
		if (k <= 0)
			continue;
		got[k] = 0;
		got[strcspn(got, "\n")] = 0;
		if (strcmp(got, name) == 0) {
			found = 1;
			snprintf(path, sizeof path, "/dev/%s", e->d_name);
			fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
		}
	}
	int err = errno;
	if (d)
		closedir(d);
	errno = found ? err : ENOENT;
	return fd;
}

/* The index in ports[] of the port named `name`, opened if it was not; -1 with errno if it cannot be. */
static int hub_port(const char *name)
{
	for (int i = 0; i < nports; i++)
		if (strcmp(ports[i].name, name) == 0)
			return i;
	if (strlen(name) >= sizeof ports[0].name || nports == (int)(sizeof ports / sizeof ports[0])) {
		errno = EINVAL;
		return -1;
	}
	int fd = open_port(name);
	if (fd < 0)
		return -1;
	snprintf(ports[nports].name, sizeof ports[0].name, "%s", name);
	ports[nports].fd = fd;
	return nports++;
}

static void hub_spawn(int argc, char **argv)
{
	(void)argc;
	int uid;
	if (arg_int(argv, 2, &uid))
		return;
	if (strlen(argv[1]) >= sizeof kids[0].tag || strcmp(argv[1], "*") == 0) {
		bad("spawn: the proc tag must be shorter than %d bytes and not *", (int)sizeof kids[0].tag);
		return;
	}
	struct child *old = find_child(argv[1]);
	if (old && old->fd >= 0) {
		reply_err(EEXIST);
		return;
	}
	if (old)
		remove_child(old);
	if (nkids == MAX_CHILDREN) {
		reply_err(EAGAIN);
		return;
	}
	int port = -1;
	if (argc > 3) {  /* a virtio-serial port of its own, by name: the host talks to it there */
		port = hub_port(argv[3]);
		for (int i = 0; port >= 0 && i < nkids; i++)
			if (kids[i].port == port + 1 && kids[i].fd >= 0) {
				port = -1;
				errno = EBUSY;  /* a live process has it */
			}
		if (port < 0) {
			reply_err(errno);
			return;
		}
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		reply_err(errno);
		return;
	}
	char sync[sizeof cur_id];  /* the line the child's port starts with: `<sync> sync` */
	snprintf(sync, sizeof sync, "%s", cur_id[0] && cur_id[0] != '-' ? cur_id : "0");
	char *args[] = { "ashcheck-exec", port >= 0 ? "--port" : NULL, sync, NULL };
	pid_t pid = spawn_self(sv[1], port >= 0 ? ports[port].fd : -1, args);
	int e = errno;
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		reply_err(e);
		return;
	}
	struct child *c = &kids[nkids++];
	memset(c, 0, sizeof *c);
	snprintf(c->tag, sizeof c->tag, "%s", argv[1]);
	c->pid = pid;
	c->fd = sv[0];
	c->port = port + 1;
	/* A first request proves the exec worked; with a uid it is the drop of privileges itself. */
	char req[48];
	int rfds[MAX_FDS_PER_MSG], nr;
	snprintf(req, sizeof req, uid == -1 ? "ping" : "setuid %d", uid);
	char *reply = child_call(c, req, NULL, 0, rfds, &nr);
	for (int i = 0; i < nr; i++)
		close(rfds[i]);
	if (reply && strcmp(reply, "ok") == 0) {
		reply_ok();
		ob_i64(pid);
	} else if (reply && strncmp(reply, "err ", 4) == 0) {
		reply_start();
		ob_str(reply);
	} else {
		bad("spawn %s: the new executor %s", c->tag, reply ? "answered garbage" : c->why);
	}
	free(reply);
	if (!reply_is_ok())
		remove_child(c);
}

static void hub_kill(int argc, char **argv)
{
	(void)argc;
	struct child *c = find_child(argv[1]);
	if (!c) {
		reply_err(ESRCH);
		return;
	}
	remove_child(c);
	reply_ok();
}

static void hub_xfer(int argc, char **argv)
{
	struct child *src = find_child(argv[1]), *dst = find_child(argv[2]);
	if (!src || !dst) {
		bad("xfer: no process %.40s", src ? argv[2] : argv[1]);
		return;
	}
	if (src->fd < 0 || dst->fd < 0) {
		reply_lost(src->fd < 0 ? src : dst);
		return;
	}
	/* the fd list is checked by src itself: the request is `sendfds` with the same tokens */
	size_t len = strlen("sendfds");
	for (int i = 3; i < argc; i++)
		len += 1 + strlen(argv[i]);
	char *req = malloc(len + 1);
	if (!req)
		abort();
	strcpy(req, "sendfds");
	for (int i = 3; i < argc; i++) {
		strcat(req, " ");
		strcat(req, argv[i]);
	}
	int fds[MAX_FDS_PER_MSG], nfds, back[MAX_FDS_PER_MSG], nback;
	char *reply = child_call(src, req, NULL, 0, fds, &nfds);
	free(req);
	if (!reply) {
		reply_lost(src);
	} else if (strcmp(reply, "ok") != 0) {
		reply_start();
		ob_str(reply);  /* err 9 (nothing delivered), or src's bad */
	} else {
		free(reply);
		reply = child_call(dst, "recvfds", fds, nfds, back, &nback);
		for (int i = 0; i < nback; i++)
			close(back[i]);
		if (!reply) {
			reply_lost(dst);
		} else {
			reply_start();
			ob_str(reply);
		}
	}
	free(reply);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
}

static void hub_servicemanager(int argc, char **argv)
{
	(void)argc;
	uint8_t *dev;
	size_t n;
	if (arg_hex(argv, 1, &dev, &n))
		return;
	if (sm_pid > 0) {
		reply_err(EBUSY);
		return;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		reply_err(errno);
		return;
	}
	char *args[] = { "ashcheck-exec", "--servicemanager", (char *)dev, NULL };
	pid_t pid = spawn_self(sv[1], -1, args);
	int e = errno;
	close(sv[1]);
	if (pid < 0) {
		close(sv[0]);
		reply_err(e);
		return;
	}
	struct child c;  /* not a proc: it only ever says whether it is ready */
	memset(&c, 0, sizeof c);
	snprintf(c.tag, sizeof c.tag, "servicemanager");
	c.pid = pid;
	c.fd = sv[0];
	int rfds[MAX_FDS_PER_MSG], nr;
	char *reply = NULL;
	struct pollfd p = { c.fd, POLLIN, 0 };
	while (c.fd >= 0 && !child_line(&c, &reply, &n)) {
		int k = poll(&p, 1, HUB_SYNC_TIMEOUT_MS);
		if (k <= 0 || child_read(&c, rfds, &nr, MAX_FDS_PER_MSG) <= 0)
			break;
	}
	free(c.buf);
	if (reply && strcmp(reply, "ok") == 0) {
		sm_pid = pid;
		sm_fd = c.fd;
		reply_ok();
	} else {
		close(c.fd);
		reap(pid, c.why, sizeof c.why);
		if (reply && strncmp(reply, "err ", 4) == 0) {
			reply_start();
			ob_str(reply);
		} else {
			bad("the servicemanager did not start: %s", c.why);
		}
	}
	free(reply);
}

static void hub_cleanup(void)
{
	while (nkids > 0)
		remove_child(&kids[nkids - 1]);
	if (sm_pid > 0) {
		close(sm_fd);
		reap(sm_pid, NULL, 0);
		sm_pid = -1;
	}
}

static void hub_exit(int argc, char **argv)
{
	(void)argc; (void)argv;
	hub_cleanup();
	reply_ok();
	hub_reply("*");
	_exit(0);
}

/* Requests to the hub itself (tag `*`). */
static const struct op hub_ops[] = {
	{ "ping", 0, 0, op_ping },
	{ "version", 0, 0, op_version },
	{ "spawn", 2, 3, hub_spawn },
	{ "kill", 1, 1, hub_kill },
	{ "xfer", 2, -1, hub_xfer },
	{ "servicemanager", 1, 1, hub_servicemanager },
	{ "exit", 0, 0, hub_exit },
};

static void hub_line(char *line, size_t n)
{
	char *sp = memchr(line, ' ', n);
	if (!sp || sp == line || memchr(line, 0, n)) {
		strcpy(cur_id, "-");
		bad("a hub line is `<proc> [<id>] <request>`");
		hub_reply("*");
		return;
	}
	*sp = 0;
	char *rest = sp + 1;
	size_t rn = n - (size_t)(rest - line);
	if (strcmp(line, "*") == 0) {
		if (take_id(&rest, &rn) == 0)
			dispatch(hub_ops, sizeof hub_ops / sizeof hub_ops[0], rest, rn);
		hub_reply("*");
		return;
	}
	char id[sizeof cur_id];
	read_id(rest, rn, id);  /* the id the child will answer with */
	struct child *c = find_child(line);
	if (!c) {
		memcpy(cur_id, id, sizeof cur_id);
		bad("no process %.40s (spawn it first)", line);
		hub_reply(line);
	} else if (c->fd < 0) {
		char msg[256];
		snprintf(msg, sizeof msg, "process %s (pid %d) %s", c->tag, (int)c->pid, c->why);
		hub_lost(c->tag, id, msg);
	} else {
		owe(c, id, 0);
		child_send(c, rest, NULL, 0);
	}
}

/* An overlong line is answered `bad` under the tag and id its first bytes name, if they can. */
static void hub_overlong(void)
{
	const char *tag = "*";
	char *sp = memchr(in.head, ' ', in.headlen);
	strcpy(cur_id, "-");
	if (sp) {
		*sp = 0;
		if (strcmp(in.head, "*") == 0 || find_child(in.head)) {
			tag = in.head;
			read_id(sp + 1, in.headlen - (size_t)(sp + 1 - in.head), cur_id);
		}
	}
	bad("a hub line longer than %zu bytes (discarded)", in.max);
	hub_reply(tag);
}

static int hub_main(const char *device)
{
	process_setup();
	int fd = 0;
	hub_out = 1;
	if (device) {
		fd = open(device, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "ashcheck-exec hub: cannot open %s: %s\n", device, strerror(errno));
			return 1;
		}
		hub_out = fd;
		struct termios tio;
		if (tcgetattr(fd, &tio) == 0) {  /* a tty: no echo, no line editing, no CR/LF mapping */
			cfmakeraw(&tio);
			tcsetattr(fd, TCSANOW, &tio);
		}
	}
	reader_init(&in, fd, MAX_LINE + sizeof kids[0].tag + MAX_ID + 1);
	for (;;) {
		struct pollfd p[MAX_CHILDREN + 2];
		struct child *who[MAX_CHILDREN + 2];
		int np = 0;
		p[np].fd = fd;
		p[np].events = POLLIN;
		who[np++] = NULL;
		for (int i = 0; i < nkids; i++)
			if (kids[i].fd >= 0) {
				p[np].fd = kids[i].fd;
				p[np].events = POLLIN;
				who[np++] = &kids[i];
			}
		int smi = -1;
		if (sm_fd >= 0) {
			smi = np;
			p[np].fd = sm_fd;
			p[np].events = POLLIN;
			who[np++] = NULL;
		}
		if (poll(p, (nfds_t)np, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		/* children first: their replies were asked for before anything still unread on the input */
		for (int i = 1; i < np; i++) {
			if (!p[i].revents)
				continue;
			if (i == smi) {  /* the servicemanager says nothing more: this is its death */
				char junk[256];
				if (read(sm_fd, junk, sizeof junk) <= 0) {
					close(sm_fd);
					reap(sm_pid, NULL, 0);
					sm_fd = sm_pid = -1;
				}
				continue;
			}
			struct child *c = who[i];
			if (c->fd < 0)
				continue;
			if (child_read(c, NULL, NULL, 0) <= 0)
				child_dead(c, NULL);
			else
				child_forward(c);
		}
		if (p[0].revents) {
			ssize_t got = reader_fill(&in);
			if (got <= 0)
				break;
			char *line;
			size_t n;
			int k;
			while ((k = reader_next(&in, &line, &n)) != LINE_NONE) {
				close_line_fds(&in);  /* fds cannot travel on to a child this way */
				if (k == LINE_OVERLONG)
					hub_overlong();
				else
					hub_line(line, n);
			}
		}
	}
	hub_cleanup();
	return 0;
}

int main(int argc, char **argv)
{
	const char *mode = argc > 1 ? argv[1] : "";
	while (*mode == '-')
		mode++;
	if (argc == 1)
		return child_main(NULL);
	if (strcmp(mode, "port") == 0 && argc == 3 && strlen(argv[2]) <= MAX_ID)
		return child_main(argv[2]);
	if (strcmp(mode, "hub") == 0 && argc <= 3)
		return hub_main(argc == 3 ? argv[2] : NULL);
	if (strcmp(mode, "servicemanager") == 0 && argc == 3)
		return servicemanager_main(argv[2]);
	fprintf(stderr, "usage: %s | %s --hub [DEVICE] | %s --servicemanager DEVICE\n", argv[0], argv[0], argv[0]);
	return 2;
}
