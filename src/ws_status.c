/*
 * ws_status.c - see ws_status.h.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_protocol.h"
#include "ap_mpm.h"
#include "apr_atomic.h"
#include "apr_shm.h"
#include "mod_status.h"

#include "ws_status.h"

#define WS_CLOSE_FIRST 1000
#define WS_CLOSE_CODES 16            /* 1000..1015 counted one by one, the rest together */

typedef struct ws_stats_slot {
    apr_uint32_t pid;
    apr_uint32_t open_async;
    apr_uint32_t open_blocking;
    apr_uint32_t opened;             /* sessions since the child started */
    apr_uint32_t queue_drops;
    apr_uint32_t bp_overruns;
    apr_uint32_t redis_pub_up, redis_sub_up;
    apr_uint32_t closes[WS_CLOSE_CODES + 1];
    apr_uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
} ws_stats_slot;

/* The sum over the live children. */
typedef struct ws_stats_sum {
    ws_stats_slot s;
    int children, redis_up;
} ws_stats_sum;

static apr_shm_t *ws_stats_shm;
static ws_stats_slot *ws_stats;      /* this child's slot, or NULL */
static int ws_stats_nslots;
static const char *ws_stats_backplane = "off";

void ws_status_create(apr_pool_t *pconf, const char *backplane)
{
    int limit = 0;
    apr_size_t size;
    ws_stats_backplane = backplane;
    if (ap_mpm_query(AP_MPMQ_HARD_LIMIT_DAEMONS, &limit) != APR_SUCCESS || limit < 1) {
        limit = 16;
    }
    ws_stats_nslots = limit;
    size = sizeof(ws_stats_slot) * (apr_size_t)limit;
    if (apr_shm_create(&ws_stats_shm, size, NULL, pconf) != APR_SUCCESS) {
        ws_stats_shm = NULL;         /* no counters, nothing else lost */
        return;
    }
    memset(apr_shm_baseaddr_get(ws_stats_shm), 0, size);
}

static apr_status_t ws_stats_release(void *data)
{
    (void)data;
    if (ws_stats) {
        apr_atomic_set32(&ws_stats->pid, 0);
        ws_stats = NULL;
    }
    return APR_SUCCESS;
}

/* Claim a slot: a free one, or one whose child died without clearing it. */
void ws_status_child_init(apr_pool_t *pchild)
{
    ws_stats_slot *slots;
    apr_uint32_t me = (apr_uint32_t)getpid();
    int i;
    if (!ws_stats_shm) {
        return;
    }
    slots = apr_shm_baseaddr_get(ws_stats_shm);
    for (i = 0; i < ws_stats_nslots && !ws_stats; i++) {
        apr_uint32_t owner = apr_atomic_read32(&slots[i].pid);
        if ((owner == 0 || (kill((pid_t)owner, 0) != 0 && errno == ESRCH))
            && apr_atomic_cas32(&slots[i].pid, me, owner) == owner) {
            memset((char *)&slots[i] + sizeof(apr_uint32_t), 0,
                   sizeof(ws_stats_slot) - sizeof(apr_uint32_t));
            ws_stats = &slots[i];
        }
    }
    apr_pool_cleanup_register(pchild, NULL, ws_stats_release, apr_pool_cleanup_null);
}

void ws_status_session_open(int async)
{
    if (ws_stats) {
        apr_atomic_inc32(async ? &ws_stats->open_async : &ws_stats->open_blocking);
        apr_atomic_inc32(&ws_stats->opened);
    }
}

void ws_status_session_end(int async, unsigned code, apr_uint64_t msgs_in,
                           apr_uint64_t bytes_in, apr_uint64_t msgs_out,
                           apr_uint64_t bytes_out)
{
    unsigned i = code - WS_CLOSE_FIRST;
    if (!ws_stats) {
        return;
    }
    apr_atomic_dec32(async ? &ws_stats->open_async : &ws_stats->open_blocking);
    apr_atomic_inc32(&ws_stats->closes[i < WS_CLOSE_CODES ? i : WS_CLOSE_CODES]);
    apr_atomic_add64(&ws_stats->msgs_in, msgs_in);
    apr_atomic_add64(&ws_stats->bytes_in, bytes_in);
    apr_atomic_add64(&ws_stats->msgs_out, msgs_out);
    apr_atomic_add64(&ws_stats->bytes_out, bytes_out);
}

void ws_status_queue_drop(void)
{
    if (ws_stats) {
        apr_atomic_inc32(&ws_stats->queue_drops);
    }
}

void ws_status_bp_overrun(void)
{
    if (ws_stats) {
        apr_atomic_inc32(&ws_stats->bp_overruns);
    }
}

void ws_status_bp_redis(int subscriber, int up)
{
    if (ws_stats) {
        apr_atomic_set32(subscriber ? &ws_stats->redis_sub_up : &ws_stats->redis_pub_up,
                         up ? 1 : 0);
    }
}

static void ws_stats_add(ws_stats_sum *sum, ws_stats_slot *x)
{
    int i;
    sum->children++;
    sum->s.open_async += apr_atomic_read32(&x->open_async);
    sum->s.open_blocking += apr_atomic_read32(&x->open_blocking);
    sum->s.opened += apr_atomic_read32(&x->opened);
    sum->s.queue_drops += apr_atomic_read32(&x->queue_drops);
    sum->s.bp_overruns += apr_atomic_read32(&x->bp_overruns);
    sum->redis_up += apr_atomic_read32(&x->redis_pub_up) && apr_atomic_read32(&x->redis_sub_up);
    for (i = 0; i <= WS_CLOSE_CODES; i++) {
        sum->s.closes[i] += apr_atomic_read32(&x->closes[i]);
    }
    sum->s.msgs_in += apr_atomic_read64(&x->msgs_in);
    sum->s.msgs_out += apr_atomic_read64(&x->msgs_out);
    sum->s.bytes_in += apr_atomic_read64(&x->bytes_in);
    sum->s.bytes_out += apr_atomic_read64(&x->bytes_out);
}

/* ?auto: one `Key: value` line each, the same keys every time. */
static void ws_status_auto(request_rec *r, const ws_stats_sum *sum)
{
    int i;
    ap_rprintf(r, "WebSocketSessionsAsync: %u\nWebSocketSessionsBlocking: %u\n"
               "WebSocketSessionsOpened: %u\nWebSocketMessagesIn: %" APR_UINT64_T_FMT
               "\nWebSocketMessagesOut: %" APR_UINT64_T_FMT "\nWebSocketBytesIn: %"
               APR_UINT64_T_FMT "\nWebSocketBytesOut: %" APR_UINT64_T_FMT "\n",
               sum->s.open_async, sum->s.open_blocking, sum->s.opened, sum->s.msgs_in,
               sum->s.msgs_out, sum->s.bytes_in, sum->s.bytes_out);
    for (i = 0; i < WS_CLOSE_CODES; i++) {
        ap_rprintf(r, "WebSocketCloses%d: %u\n", WS_CLOSE_FIRST + i, sum->s.closes[i]);
    }
    ap_rprintf(r, "WebSocketClosesOther: %u\nWebSocketQueueDrops: %u\n"
               "WebSocketChildren: %d\nWebSocketBackplane: %s\n"
               "WebSocketBackplaneOverruns: %u\nWebSocketBackplaneRedisUp: %d\n",
               sum->s.closes[WS_CLOSE_CODES], sum->s.queue_drops, sum->children,
               ws_stats_backplane, sum->s.bp_overruns, sum->redis_up);
}

static void ws_status_html(request_rec *r, const ws_stats_sum *sum)
{
    int i;
    ap_rprintf(r, "<hr /><h2>mod_websocket</h2>\n<dl><dt>%u open sessions: %u async "
               "(parked or running on a worker), %u blocking (one thread each), in %d "
               "children</dt>\n<dt>%u sessions opened, %" APR_UINT64_T_FMT " messages (%"
               APR_UINT64_T_FMT " bytes) in, %" APR_UINT64_T_FMT " (%" APR_UINT64_T_FMT
               " bytes) out (closed sessions, since each child started)</dt>\n<dt>closes:",
               sum->s.open_async + sum->s.open_blocking, sum->s.open_async,
               sum->s.open_blocking, sum->children, sum->s.opened, sum->s.msgs_in,
               sum->s.bytes_in, sum->s.msgs_out, sum->s.bytes_out);
    for (i = 0; i < WS_CLOSE_CODES; i++) {
        if (sum->s.closes[i]) {
            ap_rprintf(r, " %d&times;%u", WS_CLOSE_FIRST + i, sum->s.closes[i]);
        }
    }
    ap_rprintf(r, " other&times;%u; %u sends refused on a full queue</dt>\n<dt>backplane %s"
               ", %u reader overruns, Redis up in %d children</dt></dl>\n",
               sum->s.closes[WS_CLOSE_CODES], sum->s.queue_drops, ws_stats_backplane,
               sum->s.bp_overruns, sum->redis_up);
}

static int ws_status_hook(request_rec *r, int flags)
{
    ws_stats_slot *slots;
    ws_stats_sum sum;
    int i;
    if (!ws_stats_shm) {
        return OK;
    }
    memset(&sum, 0, sizeof(sum));
    slots = apr_shm_baseaddr_get(ws_stats_shm);
    for (i = 0; i < ws_stats_nslots; i++) {
        if (apr_atomic_read32(&slots[i].pid)) {
            ws_stats_add(&sum, &slots[i]);
        }
    }
    if (flags & AP_STATUS_SHORT) {
        ws_status_auto(r, &sum);
    }
    else {
        ws_status_html(r, &sum);
    }
    return OK;
}

void ws_status_register_hooks(void)
{
    APR_OPTIONAL_HOOK(ap, status_hook, ws_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}
