/*
 * libcutils_host.c: Debian's host libcutils (package android-libcutils) behind ashcheck_impl.h.
 *
 * Only the library's public API is used: <cutils/ashmem.h>, linked with -lcutils. libcutils has
 * five calls; the other slots stay NULL, so the executor does what a program here would do for
 * them (the raw ashmem ioctl on the fd). Built at adapter start by adapters/libcutils_host.py:
 *
 *   cc -shared -fPIC -I/usr/include/android -DLIBCUTILS_VERSION='"<dpkg version>"' \
 *      libcutils_host.c -L/usr/lib/<multiarch>/android -Wl,-rpath,... -lcutils
 *
 * The calls return -1 and set errno; ashcheck wants -errno. errno is cleared first, because
 * ashmem_get_size_region returns an int that can be -1 as a size (a region of 4 GiB - 1 bytes)
 * with errno untouched: that -1 is passed on as it is, which the executor reports the way the
 * kernel's ioctl would report it (EPERM).
 */
#include <errno.h>

#include <cutils/ashmem.h>

#include "ashcheck_impl.h"

#ifndef LIBCUTILS_VERSION
#define LIBCUTILS_VERSION "unknown version"
#endif

static int64_t result(int r)
{
	return r == -1 && errno ? -(int64_t)errno : r;
}

static int64_t create_region(const char *name, size_t size)
{
	errno = 0;
	return result(ashmem_create_region(name, size));
}

static int64_t set_prot_region(int fd, int prot)
{
	errno = 0;
	return result(ashmem_set_prot_region(fd, prot));
}

static int64_t pin_region(int fd, size_t offset, size_t len)
{
	errno = 0;
	return result(ashmem_pin_region(fd, offset, len));
}

static int64_t unpin_region(int fd, size_t offset, size_t len)
{
	errno = 0;
	return result(ashmem_unpin_region(fd, offset, len));
}

static int64_t get_size_region(int fd)
{
	errno = 0;
	return result(ashmem_get_size_region(fd));
}

const struct ashcheck_impl ashcheck_impl = {
	.version = ASHCHECK_IMPL_VERSION,
	.size = sizeof(struct ashcheck_impl),
	.name = "Debian android-libcutils " LIBCUTILS_VERSION " (libcutils/ashmem-host.cpp)",
	.create_region = create_region,
	.set_prot_region = set_prot_region,
	.pin_region = pin_region,
	.unpin_region = unpin_region,
	.get_size_region = get_size_region,
};
