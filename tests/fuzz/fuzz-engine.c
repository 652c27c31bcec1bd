/* SPDX-License-Identifier: MIT */
/* Reading a fuzzed image through its driver on an engine (fuzz-engine.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/engine.h>

#include "fuzz-engine.h"

struct fuzz_req {
	struct vbd_request	r;
	bool			done;
};

static void fuzz_req_done(struct vbd_request *vreq, int err)
{
	(void)err;
	((struct fuzz_req *)vreq)->done = true;
}

void fuzz_read_engine(const char *driver, const char *path,
		      uint64_t max_secs)
{
	static struct td_engine *e;	/* one for the run: io_setup is slow */
	struct fuzz_req q;
	char spec[4200], err[1024];
	uint64_t sec, secs;
	td_vbd_t *v;
	void *buf;

	if (!e && (td_drivers_init() || !(e = td_engine_new())))
		return;
	snprintf(spec, sizeof(spec), "%s:%s", driver, path);
	if (vbd_open(e, spec, TD_OPEN_RDONLY | TD_OPEN_FORCE_SHARE, NULL, &v,
		     err, sizeof(err)))
		return;
	secs = vbd_size(v) >> 9;
	if (secs > max_secs)
		secs = max_secs;
	if (!posix_memalign(&buf, TD_BUF_ALIGN, 64 * 512)) {
		for (sec = 0; sec < secs; sec += 64) {
			memset(&q, 0, sizeof(q));
			q.r.op = TD_OP_READ;
			q.r.buf = buf;
			q.r.sec = sec;
			q.r.secs = secs - sec < 64 ? (uint32_t)(secs - sec) : 64;
			q.r.cb = fuzz_req_done;
			vbd_submit(v, &q.r);
			while (!q.done)
				td_loop_run_once(e->loop, 1000);
		}
		free(buf);
	}
	vbd_close(v);
}
