/* -include'd into memfd_test.c: stdout line-buffered, as on a terminal. Its output goes to a pipe,
 * where stdio buffers it whole: children it forks would print the parent's buffered lines again,
 * and abort() at a failure would lose the test names before it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* as memfd_test.c defines it, before any header */
#endif
#include <stdio.h>
__attribute__((constructor)) static void ashcheck_line_buffered(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
}
