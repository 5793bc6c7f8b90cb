/*
 * ashcheck_impl.h: how ashcheck runs a native implementation of the ashmem calls.
 *
 * Who uses it: whoever wants to check a C implementation of the libcutils-level ashmem API
 * (libcutils itself, a vendor's ashmem library, a reimplementation) with ashcheck. Wrap the
 * implementation in a shared library that defines one symbol,
 *
 *     const struct ashcheck_impl ashcheck_impl = { .version = ASHCHECK_IMPL_VERSION, ... };
 *
 * and run `ashcheck run --adapter native --adapter-option library=/path/libmine.so`, or subclass
 * ashcheck.adapters.native.NativeAdapter (see the README, "Wrapping a native implementation").
 *
 * THEORY OF OPERATION. ashcheck models processes; each is one executor process (ashcheck-exec,
 * built in its dlopen variant). Right after it starts, still with the harness's privileges,
 * the executor dlopen()s the library (RTLD_NOW | RTLD_LOCAL), reads `ashcheck_impl`, and from
 * then on performs the region operations by calling its functions. Everything else a program
 * does with a region's fd (mmap, munmap, mprotect, loads and stores, dup, close, lseek, read,
 * write, fcntl, passing fds to another process) is done by the executor itself with system calls,
 * exactly as a program using the library would do it.
 *
 * A NULL slot means "the library has no such call". The executor then does what a program on
 * that platform does instead: the raw ashmem ioctl on the fd (ASHMEM_GET_NAME, ...), and whatever
 * the kernel answers is the outcome. If your implementation has no equivalent at all, declare the
 * operation `unsupported` in the Python subclass: the suite then never performs it and skips the
 * rules only it can reach.
 *
 * RESULTS follow the raw system call convention: a value in -4095..-1 is -errno; any other value
 * is the result (an fd, 0, a size, ASHMEM_WAS_PURGED...). A C library that returns -1 and sets
 * errno converts with `r == -1 ? -errno : r`.
 *
 * RULES FOR THE LIBRARY.
 *   - Write nothing to stdout: fd 1 carries the executor's protocol. stderr is free.
 *   - Keep no fd open between calls other than the ones it returns: the suite predicts fd
 *     numbers (lowest free). fds opened while the library loads (constructors) are fine: they are
 *     part of every modelled process's initial fd set.
 *   - Calls happen on one thread, one at a time, in the process that performs the operation.
 *     A crash or abort() in a call ends that process: the outcome is indeterminate.
 *
 * VERSIONS. `version` is ASHCHECK_IMPL_VERSION as the library was compiled; the executor accepts
 * its own version only. Later versions only append slots, and `size` (sizeof the struct the
 * library was built with) tells the executor which slots exist: the ones beyond it are NULL.
 */
#ifndef ASHCHECK_IMPL_H
#define ASHCHECK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#define ASHCHECK_IMPL_VERSION 1
#define ASHCHECK_IMPL_SYMBOL "ashcheck_impl"

struct ashcheck_impl {
	uint32_t version;   /* ASHCHECK_IMPL_VERSION */
	uint32_t size;      /* sizeof(struct ashcheck_impl) */
	const char *name;   /* what the report shows as the implementation: "libfoo 1.2 (vendor X)" */

	/* libcutils' five calls (include/cutils/ashmem.h) ------------------------------------- */

	/* ashmem_create_region: a new region of `size` bytes named `name` (a C string; NULL is
	 * never passed). Result: its fd. Required: the only slot that may not be NULL. */
	int64_t (*create_region)(const char *name, size_t size);
	/* ashmem_set_prot_region: restrict the protections mappings may have (ASHMEM_SET_PROT_MASK). */
	int64_t (*set_prot_region)(int fd, int prot);
	/* ashmem_pin_region / ashmem_unpin_region: the byte range [offset, offset + len), 0 = to the
	 * end. pin: ASHMEM_NOT_PURGED (0) or ASHMEM_WAS_PURGED (1); unpin: ASHMEM_IS_UNPINNED (0). */
	int64_t (*pin_region)(int fd, size_t offset, size_t len);
	int64_t (*unpin_region)(int fd, size_t offset, size_t len);
	/* ashmem_get_size_region: the region's size (ASHMEM_GET_SIZE). */
	int64_t (*get_size_region)(int fd);

	/* the other ashmem ioctls, for implementations that provide them -------------------- */

	/* ASHMEM_SET_NAME; `name` may be NULL (a NULL pointer, as the ioctl may be given). */
	int64_t (*set_name)(int fd, const char *name);
	/* ASHMEM_GET_NAME: write the name and its NUL into buf (`len` = 256 bytes, ASHMEM_NAME_LEN). */
	int64_t (*get_name)(int fd, char *buf, size_t len);
	/* ASHMEM_SET_SIZE */
	int64_t (*set_size)(int fd, size_t size);
	/* ASHMEM_GET_PROT_MASK: the current mask (PROT_READ | PROT_WRITE | PROT_EXEC bits). */
	int64_t (*get_prot_mask)(int fd);
	/* ASHMEM_GET_PIN_STATUS over [offset, offset + len): ASHMEM_IS_PINNED (1) or _UNPINNED (0). */
	int64_t (*get_pin_status)(int fd, size_t offset, size_t len);
	/* ASHMEM_PURGE_ALL_CACHES, asked through `fd`: how many pages were purged. */
	int64_t (*purge_all_caches)(int fd);
};

#endif /* ASHCHECK_IMPL_H */
