/* -include'd before ashmem_test.cpp and ashmem-dev.cpp: what bionic's headers give them and glibc's
 * do not (see README.md). */
#include <string.h>
#include <sys/ioctl.h>
#include <linux/ashmem.h>

#define PAGE_SIZE 4096 /* x86_64 and the guest: the only targets the peers are built for */

#ifdef __cplusplus
extern "C" {
#endif
/* bionic's strlcpy: copies at most size - 1 bytes, always terminates, returns strlen(src). */
static inline size_t ashcheck_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n = strlen(src);
	if (size) {
		size_t k = n < size - 1 ? n : size - 1;
		memcpy(dst, src, k);
		dst[k] = 0;
	}
	return n;
}
#ifdef __cplusplus
}
#endif
#define strlcpy ashcheck_strlcpy
