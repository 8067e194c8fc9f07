/*
 * srvstat.h - what a benchmark client reads of the server it measures: the resident memory
 * and the threads of a process and all its descendants (httpd's parent and children,
 * nginx's master and workers), from /proc.  Shared by wsload and sseload.
 */
#ifndef SRVSTAT_H
#define SRVSTAT_H

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct srvstat {
    long rss_kb;
    int procs, threads;
    int ok;
} srvstat;

/* The process `root` and its descendants, summed; ok is 0 when none was found. */
static inline srvstat srvstat_read(int root)
{
    srvstat r = {0, 0, 0, 0};
    if (root <= 0)
        return r;
    enum { MAXP = 65536 };
    static int pids[MAXP], ppids[MAXP];
    static char intree[MAXP];
    int np = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return r;
    struct dirent *de;
    while ((de = readdir(d)) && np < MAXP) {
        if (!isdigit((unsigned char)de->d_name[0]))
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = 0;
        char *rp = strrchr(buf, ')');
        int ppid = 0;
        if (!rp || sscanf(rp + 2, "%*c %d", &ppid) != 1)
            continue;
        pids[np] = atoi(de->d_name);
        ppids[np] = ppid;
        intree[np] = pids[np] == root;
        np++;
    }
    closedir(d);
    for (int pass = 0; pass < 4; pass++)
        for (int i = 0; i < np; i++)
            if (!intree[i])
                for (int j = 0; j < np; j++)
                    if (intree[j] && ppids[i] == pids[j]) {
                        intree[i] = 1;
                        break;
                    }
    for (int i = 0; i < np; i++) {
        if (!intree[i])
            continue;
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        r.procs++;
        while (fgets(line, sizeof line, f)) {
            long v;
            if (sscanf(line, "VmRSS: %ld", &v) == 1)
                r.rss_kb += v;
            else if (sscanf(line, "Threads: %ld", &v) == 1)
                r.threads += (int)v;
        }
        fclose(f);
    }
    r.ok = r.procs > 0;
    return r;
}

#endif
