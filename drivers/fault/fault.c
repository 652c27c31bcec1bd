/* SPDX-License-Identifier: MIT */
/*
 * fault: a filter that injects errors and delays, for testing what the
 * engine and the clients do when storage misbehaves.
 *
 * Opened as fault:SETTINGS:DRIVER:PATH (e.g. fault:none:raw:/img), it sits
 * on the image DRIVER:PATH and forwards everything to it until told
 * otherwise, at open or at run time ("fault NAME SETTINGS" in .ctl).
 *
 * SETTINGS is "none" or a comma list:
 *   err=EIO|EAGAIN|EBUSY|EINTR|ENOSPC|N  errno to inject (default EIO)
 *   ops=rwf      which requests match: r read, w write, f flush (rwf)
 *   burst=N      fail the next N matching requests
 *   every=N      fail every Nth matching request
 *   rate=P       fail P percent of matching requests (pseudo-random)
 *   delay_ms=N   hold every matching request N ms before forwarding it
 * err= without burst, every or rate fails every matching request.
 * Each "fault" command replaces the whole setting.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tapfs/engine.h>
#include <tapfs/log.h>

#define FAULT_MAX_DELAYED	1024
#define FAULT_OP_READ		(1u << 0)
#define FAULT_OP_WRITE		(1u << 1)
#define FAULT_OP_FLUSH		(1u << 2)

struct fault_cfg {
	unsigned	ops;
	int		err;		/* positive errno */
	unsigned	burst;
	unsigned	every;
	unsigned	rate;		/* percent */
	unsigned	delay_ms;
	bool		always;		/* err= alone: fail every match */
};

struct fault_delayed {
	struct td_timer	 timer;
	td_request_t	 treq;
	struct td_pool	*pool;
};

struct fault_state {
	struct fault_cfg cfg;
	uint64_t	 matched;
	uint64_t	 injected;
	uint32_t	 rng;
	struct td_pool	 delayed;
	char		*below;		/* "DRIVER:PATH" */
};

static const struct {
	const char *name;
	int err;
} fault_errnos[] = {
	{ "EIO", EIO }, { "EAGAIN", EAGAIN }, { "EBUSY", EBUSY },
	{ "EINTR", EINTR }, { "ENOSPC", ENOSPC }, { "ETIMEDOUT", ETIMEDOUT },
};

static int fault_uint(const char *v, unsigned *out)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || !*v || *end || n > 1000000000UL)
		return -EINVAL;
	*out = (unsigned)n;
	return 0;
}

/* Parse SETTINGS (a writable copy) into cfg. */
static int fault_parse(char *s, struct fault_cfg *cfg, char *err,
		       size_t errlen)
{
	char *save = NULL, *kv;
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	cfg->ops = FAULT_OP_READ | FAULT_OP_WRITE | FAULT_OP_FLUSH;
	cfg->err = EIO;
	if (!strcmp(s, "none"))
		return 0;
	for (kv = strtok_r(s, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *v = strchr(kv, '=');
		int rc = 0;

		if (!v)
			goto bad;
		*v++ = '\0';
		if (!strcmp(kv, "err")) {
			for (i = 0; i < sizeof(fault_errnos) /
					sizeof(fault_errnos[0]); i++)
				if (!strcmp(v, fault_errnos[i].name))
					break;
			if (i < sizeof(fault_errnos) / sizeof(fault_errnos[0]))
				cfg->err = fault_errnos[i].err;
			else if (fault_uint(v, (unsigned *)&cfg->err) ||
				 !cfg->err || cfg->err > 4095)
				goto bad;
		} else if (!strcmp(kv, "ops")) {
			cfg->ops = 0;
			for (; *v; v++) {
				if (*v == 'r')
					cfg->ops |= FAULT_OP_READ;
				else if (*v == 'w')
					cfg->ops |= FAULT_OP_WRITE;
				else if (*v == 'f')
					cfg->ops |= FAULT_OP_FLUSH;
				else
					goto bad;
			}
		} else if (!strcmp(kv, "burst")) {
			rc = fault_uint(v, &cfg->burst);
		} else if (!strcmp(kv, "every")) {
			rc = fault_uint(v, &cfg->every);
		} else if (!strcmp(kv, "rate")) {
			rc = fault_uint(v, &cfg->rate);
			if (!rc && cfg->rate > 100)
				rc = -EINVAL;
		} else if (!strcmp(kv, "delay_ms")) {
			rc = fault_uint(v, &cfg->delay_ms);
		} else {
			goto bad;
		}
		if (rc)
			goto bad;
		if (!strcmp(kv, "err"))
			cfg->always = true;
	}
	if (cfg->burst || cfg->every || cfg->rate)
		cfg->always = false;
	return 0;
bad:
	td_msgf(err, errlen, "bad fault setting '%s' (keys: err ops burst "
		"every rate delay_ms, or none)", kv ? kv : s);
	return -EINVAL;
}

/*
 * path is SETTINGS:DRIVER:PATH, parsed here and nowhere else; a refusal
 * says why in drv->error (the engine shows it in .ctl).
 */
static int fault_open(td_driver_t *drv, const char *path, td_flag_t flags)
{
	struct fault_state *s = drv->data;
	const char *colon = strchr(path, ':');
	char *settings;
	int rc;

	(void)flags;
	if (!colon || !strchr(colon + 1, ':') || !colon[1] ||
	    colon[1] == ':') {
		td_msgf(drv->error, sizeof(drv->error), "fault: '%s' is not "
			"SETTINGS:DRIVER:PATH", path);
		return -EINVAL;
	}
	settings = strndup(path, (size_t)(colon - path));
	s->below = strdup(colon + 1);
	if (!settings || !s->below) {
		free(settings);
		free(s->below);
		return -ENOMEM;
	}
	rc = fault_parse(settings, &s->cfg, drv->error, sizeof(drv->error));
	free(settings);
	if (!rc)
		rc = td_pool_init(&s->delayed, FAULT_MAX_DELAYED,
				  sizeof(struct fault_delayed), sizeof(void *));
	if (rc) {
		free(s->below);
		return rc;
	}
	s->rng = 0x2545f491u;
	return 0;	/* size comes from the image below */
}

static int fault_close(td_driver_t *drv)
{
	struct fault_state *s = drv->data;

	td_pool_fini(&s->delayed);
	free(s->below);
	return 0;
}

static int fault_get_parent_id(td_driver_t *drv, td_disk_id_t *id)
{
	struct fault_state *s = drv->data;
	const char *colon = strchr(s->below, ':');

	id->drivertype = strndup(s->below, (size_t)(colon - s->below));
	id->name = strdup(colon + 1);
	if (!id->drivertype || !id->name) {
		free(id->drivertype);
		free(id->name);
		return -ENOMEM;
	}
	return 0;
}

static void fault_delay_fire(struct td_timer *t)
{
	struct fault_delayed *d = t->arg;
	td_request_t treq = d->treq;

	td_pool_put(d->pool, d);
	td_forward_request(treq);
}

static bool fault_hit(struct fault_state *s)
{
	if (s->cfg.always)
		return true;
	if (s->cfg.burst) {
		s->cfg.burst--;
		return true;
	}
	if (s->cfg.every && s->matched % s->cfg.every == 0)
		return true;
	if (s->cfg.rate) {
		/* xorshift32: repeatable runs, no global state */
		s->rng ^= s->rng << 13;
		s->rng ^= s->rng >> 17;
		s->rng ^= s->rng << 5;
		return s->rng % 100 < s->cfg.rate;
	}
	return false;
}

static void fault_queue(td_driver_t *drv, td_request_t treq, unsigned op)
{
	struct fault_state *s = drv->data;
	struct fault_delayed *d;

	if (!(s->cfg.ops & op)) {
		td_forward_request(treq);
		return;
	}
	s->matched++;
	if (fault_hit(s)) {
		s->injected++;
		td_complete_request(treq, -s->cfg.err);
		return;
	}
	if (s->cfg.delay_ms && (d = td_pool_get(&s->delayed))) {
		d->treq = treq;
		d->pool = &s->delayed;
		td_timer_init(&d->timer, fault_delay_fire, d);
		td_timer_arm(drv->engine->loop, &d->timer, s->cfg.delay_ms);
		return;
	}
	td_forward_request(treq);
}

static void fault_queue_read(td_driver_t *drv, td_request_t treq)
{
	fault_queue(drv, treq, FAULT_OP_READ);
}

static void fault_queue_write(td_driver_t *drv, td_request_t treq)
{
	fault_queue(drv, treq, FAULT_OP_WRITE);
}

static void fault_queue_flush(td_driver_t *drv, td_request_t treq)
{
	fault_queue(drv, treq, FAULT_OP_FLUSH);
}

static void fault_queue_discard(td_driver_t *drv, td_request_t treq)
{
	(void)drv;
	td_forward_request(treq);
}

static int fault_control(td_driver_t *drv, const char *args, char *err,
			 size_t errlen)
{
	struct fault_state *s = drv->data;
	struct fault_cfg cfg;
	char *copy = strdup(args);
	int rc;

	if (!copy)
		return -ENOMEM;
	rc = fault_parse(copy, &cfg, err, errlen);
	free(copy);
	if (rc)
		return rc;
	s->cfg = cfg;
	s->matched = 0;
	td_log(TD_LOG_INFO, "%s: fault setting now '%s'", s->below, args);
	return 0;
}

static void fault_debug(td_driver_t *drv, FILE *out)
{
	struct fault_state *s = drv->data;

	fprintf(out, "fault over %s: %llu matched, %llu injected\n",
		s->below, (unsigned long long)s->matched,
		(unsigned long long)s->injected);
}

const struct tap_disk tapdisk_fault = {
	TD_DISK_VERSION,
	.name			= "fault",
	.description		= "filter: inject errors and delays",
	.private_data_size	= sizeof(struct fault_state),
	.td_open		= fault_open,
	.td_close		= fault_close,
	.td_get_parent_id	= fault_get_parent_id,
	.td_validate_parent	= td_parent_any,
	.td_queue_read		= fault_queue_read,
	.td_queue_write		= fault_queue_write,
	.td_debug		= fault_debug,
	.td_queue_flush		= fault_queue_flush,
	.td_queue_discard	= fault_queue_discard,
	.disk_flags		= TD_DISK_FILTER,
	.td_control		= fault_control,
};
