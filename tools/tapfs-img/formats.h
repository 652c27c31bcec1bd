/* SPDX-License-Identifier: MIT */
/*
 * Each verb's entry for each format, defined in the verb's file and
 * collected in the table of formats (formats.c).
 */
#ifndef TAPFS_IMG_FORMATS_H
#define TAPFS_IMG_FORMATS_H

#include "tapfs-img.h"

/* create.c */
int create_raw(const struct img_create *c);
int create_vhd(const struct img_create *c);
int create_qcow2(const struct img_create *c);
int create_qcow(const struct img_create *c);
int create_vmdk(const struct img_create *c);

/* info.c */
int info_raw(const char *path, uint64_t disk_size, bool json);
int info_vhd(const char *path, uint64_t disk_size, bool json);
int info_qcow2(const char *path, uint64_t disk_size, bool json);
int info_qcow(const char *path, uint64_t disk_size, bool json);
int info_vmdk(const char *path, uint64_t disk_size, bool json);

/* check.c */
int check_raw(struct check_out *out);
int check_vhd(struct check_out *out);
int check_qcow2(struct check_out *out);
int check_qcow(struct check_out *out);
int check_vmdk(struct check_out *out);

/* coalesce.c */
struct img_runs *runs_open_vhd(const char *path);
struct img_runs *runs_open_qcow2(const char *path);

#endif
