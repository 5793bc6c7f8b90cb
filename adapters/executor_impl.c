/*
 * executor_impl.c: the executor's verbs for a native implementation (ashcheck_impl.h).
 * Included by executor.c once, before its verb table; uses its reply and argument helpers.
 *
 * When built with -DASHCHECK_DLOPEN (build.py's "dlopen" variant, a dynamically linked host
 * executor), `impl_load` dlopen()s a library; without it (the static builds for VMs and devices,
 * which cannot load libraries) it answers `bad`, and so does `impl` before a library is loaded.
 *
 *   impl_load <pathhex>           -> ok <version> <namehex> <slot>...   the slots the library
 *                                    fills (see `calls` below); bad <hex message> if it cannot be
 *                                    loaded (dlopen's message), has no `ashcheck_impl`, another
 *                                    interface version, or no create_region. Once per process.
 *   impl <slot> <args...>         -> ok <ret> | err <errno>      call one slot:
 *        impl create_region <namehex> <size>       impl set_prot_region <fd> <prot>
 *        impl pin_region <fd> <offset> <len>       impl unpin_region <fd> <offset> <len>
 *        impl get_size_region <fd>                 impl set_name <fd> <namehex | null>
 *        impl get_name <fd>   -> ok <ret> <hex of the 256-byte buffer>
 *        impl set_size <fd> <size>                 impl get_prot_mask <fd>
 *        impl get_pin_status <fd> <offset> <len>   impl purge_all_caches <fd>
 *      A result in -4095..-1 is `err <-result>`, any other is `ok <result>`. A NULL slot is `bad`:
 *      the client knows the slots from impl_load and does the raw ioctl instead.
 * Names are C strings: a name with a NUL byte ends there, as it would for a C caller.
 */
#include "ashcheck_impl.h"

#ifdef ASHCHECK_DLOPEN
#include <dlfcn.h>
#endif

/* The library's table, copied: slots beyond the size it was built with stay NULL. */
static struct ashcheck_impl impl;
static int impl_loaded;

/* The slots, in the order of the table below; the args kind says what follows the slot's name. */
enum impl_slot { S_CREATE, S_SET_PROT, S_PIN, S_UNPIN, S_GET_SIZE, S_SET_NAME, S_GET_NAME, S_SET_SIZE,
		 S_GET_PROT, S_PIN_STATUS, S_PURGE, NCALLS };
enum impl_args { A_CREATE, A_FD, A_FD_INT, A_FD_SIZE, A_FD_RANGE, A_FD_NAME };

static const struct {
	const char *name;
	size_t offset;
	enum impl_args args;
} calls[NCALLS] = {
	[S_CREATE] = { "create_region", offsetof(struct ashcheck_impl, create_region), A_CREATE },
	[S_SET_PROT] = { "set_prot_region", offsetof(struct ashcheck_impl, set_prot_region), A_FD_INT },
	[S_PIN] = { "pin_region", offsetof(struct ashcheck_impl, pin_region), A_FD_RANGE },
	[S_UNPIN] = { "unpin_region", offsetof(struct ashcheck_impl, unpin_region), A_FD_RANGE },
	[S_GET_SIZE] = { "get_size_region", offsetof(struct ashcheck_impl, get_size_region), A_FD },
	[S_SET_NAME] = { "set_name", offsetof(struct ashcheck_impl, set_name), A_FD_NAME },
	[S_GET_NAME] = { "get_name", offsetof(struct ashcheck_impl, get_name), A_FD },
	[S_SET_SIZE] = { "set_size", offsetof(struct ashcheck_impl, set_size), A_FD_SIZE },
	[S_GET_PROT] = { "get_prot_mask", offsetof(struct ashcheck_impl, get_prot_mask), A_FD },
	[S_PIN_STATUS] = { "get_pin_status", offsetof(struct ashcheck_impl, get_pin_status), A_FD_RANGE },
	[S_PURGE] = { "purge_all_caches", offsetof(struct ashcheck_impl, purge_all_caches), A_FD },
};

#define IMPL_ARGC(a) ((a) == A_FD ? 1 : (a) == A_FD_RANGE ? 3 : 2)  /* arguments after the slot */

/* Whether the library fills slot i (only compared with NULL: every slot is called by name). */
static int impl_has(int i)
{
	void (*f)(void);
	memcpy(&f, (const char *)&impl + calls[i].offset, sizeof f);
	return f != NULL;
}

static void op_impl_load(int argc, char **argv)
{
	(void)argc;
	uint8_t *path;
	size_t n;
	if (arg_hex(argv, 1, &path, &n))
		return;
#ifndef ASHCHECK_DLOPEN
	(void)path;
	bad("this executor cannot load libraries: it was not built in the dlopen variant");
#else
	if (impl_loaded) {
		bad("impl_load: a library is loaded already");
		return;
	}
	void *h = dlopen((const char *)path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		bad("dlopen: %s", dlerror());
		return;
	}
	const struct ashcheck_impl *lib = dlsym(h, ASHCHECK_IMPL_SYMBOL);
	size_t known = offsetof(struct ashcheck_impl, create_region) + sizeof lib->create_region;
	if (!lib || lib->version != ASHCHECK_IMPL_VERSION || lib->size < known || !lib->create_region) {
		if (!lib)
			bad("%s defines no symbol " ASHCHECK_IMPL_SYMBOL, (const char *)path);
		else if (lib->version != ASHCHECK_IMPL_VERSION)
			bad(ASHCHECK_IMPL_SYMBOL " has interface version %u; this executor speaks version %d",
			    (unsigned)lib->version, ASHCHECK_IMPL_VERSION);
		else
			bad(ASHCHECK_IMPL_SYMBOL ".create_region is missing: it is required");
		dlclose(h);
		return;
	}
	memset(&impl, 0, sizeof impl);
	memcpy(&impl, lib, lib->size < sizeof impl ? lib->size : sizeof impl);
	impl_loaded = 1;
	reply_ok();
	ob_u64(impl.version);
	ob_hex(impl.name ? impl.name : "", impl.name ? strlen(impl.name) : 0);
	for (int i = 0; i < NCALLS; i++)
		if (impl_has(i)) {
			ob_str(" ");
			ob_str(calls[i].name);
		}
#endif
}

static void op_impl(int argc, char **argv)
{
	int i = 0;
	while (i < NCALLS && strcmp(calls[i].name, argv[1]) != 0)
		i++;
	if (i == NCALLS) {
		bad("impl: no slot named %.40s", argv[1]);
		return;
	}
	enum impl_args a = calls[i].args;
	if (!impl_loaded || !impl_has(i)) {
		bad("impl: %s is %s", argv[1], impl_loaded ? "NULL in this library" : "not callable: no library loaded");
		return;
	}
	if (argc - 2 != IMPL_ARGC(a)) {
		bad("impl %s takes %d arguments", argv[1], IMPL_ARGC(a));
		return;
	}
	int fd = 0, v = 0;
	uint64_t x = 0, y = 0;
	uint8_t *name = NULL;
	size_t n;
	if (a == A_CREATE) {
		if (arg_hex(argv, 2, &name, &n) || arg_u64(argv, 3, &x))
			return;
	} else if (arg_int(argv, 2, &fd)) {
		return;
	}
	if ((a == A_FD_INT && arg_int(argv, 3, &v)) || (a == A_FD_SIZE && arg_u64(argv, 3, &x)) ||
	    (a == A_FD_RANGE && (arg_u64(argv, 3, &x) || arg_u64(argv, 4, &y))) ||
	    (a == A_FD_NAME && strcmp(argv[3], "null") != 0 && arg_hex(argv, 3, &name, &n)))
		return;
	char buf[256 + 4096] = { 0 };  /* get_name: ASHMEM_NAME_LEN, and room for a sloppy writer */
	const char *cname = (const char *)name;
	size_t sx = (size_t)x, sy = (size_t)y;
	int64_t r = 0;
	switch ((enum impl_slot)i) {
	case S_CREATE: r = impl.create_region(cname, sx); break;
	case S_SET_PROT: r = impl.set_prot_region(fd, v); break;
	case S_PIN: r = impl.pin_region(fd, sx, sy); break;
	case S_UNPIN: r = impl.unpin_region(fd, sx, sy); break;
	case S_GET_SIZE: r = impl.get_size_region(fd); break;
	case S_SET_NAME: r = impl.set_name(fd, cname); break;
	case S_GET_NAME: r = impl.get_name(fd, buf, 256); break;
	case S_SET_SIZE: r = impl.set_size(fd, sx); break;
	case S_GET_PROT: r = impl.get_prot_mask(fd); break;
	case S_PIN_STATUS: r = impl.get_pin_status(fd, sx, sy); break;
	case S_PURGE: r = impl.purge_all_caches(fd); break;
	case NCALLS: break;
	}
	if (r < 0 && r >= -4095) {
		reply_err((int)-r);
		return;
	}
	reply_ok();
	ob_i64(r);
	if (i == S_GET_NAME)
		ob_hex(buf, 256);
}
