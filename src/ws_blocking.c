/*
 * ws_blocking.c - the blocking driver: the thread that ran the handshake keeps the
 * session for its whole life (prefork, worker, HTTP/2 streams, WebSocketDriver
 * blocking).  It drains input without blocking (mod_ssl may hold decrypted bytes a
 * poll of the socket cannot see), runs the plugin, flushes, and polls the socket plus
 * its thread's eventfd, which other threads' sends write to.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "httpd.h"
#include "http_connection.h"
#include "ap_mpm.h"
#include "mpm_common.h"
#include "http_core.h"
#include "apr_portable.h"

#include "ws_blocking.h"

/* One eventfd per thread that runs sessions: how senders wake the owner without a file
 * descriptor per session. */
static pthread_key_t ws_thread_fd_key;
static pthread_once_t ws_thread_fd_once = PTHREAD_ONCE_INIT;

static void ws_thread_fd_free(void *p)
{
    close((int)(intptr_t)p - 1);
}

static void ws_thread_fd_init(void)
{
    pthread_key_create(&ws_thread_fd_key, ws_thread_fd_free);
}

static int ws_thread_fd(void)
{
    void *p;
    pthread_once(&ws_thread_fd_once, ws_thread_fd_init);
    p = pthread_getspecific(ws_thread_fd_key);
    if (!p) {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) {
            return -1;
        }
        pthread_setspecific(ws_thread_fd_key, (void *)(intptr_t)(fd + 1));
        return fd;
    }
    return (int)(intptr_t)p - 1;
}

static void ws_thread_fd_drain(int fd)
{
    uint64_t v;
    if (fd >= 0) {
        while (read(fd, &v, sizeof(v)) > 0) {
        }
    }
}

/* The waker (any thread, the handle's mutex held). */
static void ws_blocking_wake(ws_handle *h, void *baton)
{
    int fd = (int)(intptr_t)baton;
    uint64_t one = 1;
    ssize_t n;
    (void)h;
    do {
        n = write(fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

static apr_os_sock_t ws_conn_fd(conn_rec *c)
{
    apr_pollfd_t pfd;
    apr_interval_time_t timeout = -1;
    apr_os_sock_t fd = -1;

    memset(&pfd, 0, sizeof(pfd));
    pfd.p = c->pool;
    if (ap_get_pollfd_from_conn(c, &pfd, &timeout) != APR_SUCCESS) {
        return -1;
    }
    if (pfd.desc_type == APR_POLL_SOCKET) {
        apr_os_sock_get(&fd, pfd.desc.s);
    }
    else if (pfd.desc_type == APR_POLL_FILE && pfd.desc.f) {
        apr_os_file_get(&fd, pfd.desc.f);
    }
    /* else APR_NO_DESC: an h2 stream the client already ended (extended CONNECT with
     * END_STREAM): no input will ever come. */
    return fd;
}

/* Wait for input (or, with want_write, only for room to write: no more input is taken
 * while output is stuck), a wake-up or the timer.  Returns 1 if the socket is ready. */
static int ws_wait(apr_os_sock_t fd, int wake_fd, int want_write, apr_time_t until)
{
    struct pollfd fds[2];
    int wait_ms = -1, n;
    if (until) {
        apr_time_t left = until - apr_time_now();
        wait_ms = left <= 0 ? 0 : (int)((left + 999) / 1000);
    }
    fds[0].fd = fd;
    fds[0].events = want_write ? POLLOUT : POLLIN;
    fds[1].fd = wake_fd;
    fds[1].events = POLLIN;
    fds[0].revents = fds[1].revents = 0;
    n = poll(fds, wake_fd >= 0 ? 2 : 1, wait_ms);
    if (fds[1].revents) {
        ws_thread_fd_drain(wake_fd);
    }
    return n > 0 && fds[0].revents;
}

void ws_blocking_run(ws_conn *s)
{
    apr_os_sock_t fd = ws_conn_fd(s->c);
    int wake_fd = ws_thread_fd();

    ws_handle_set_waker(s->h, ws_blocking_wake, (void *)(intptr_t)wake_fd);

    if (fd < 0) {
        s->state = WS_ST_DONE;
    }
    while (s->state != WS_ST_DONE) {
        int mpm_state = 0;
        apr_time_t next = ws_session_round(s, 1, 0);
        if (ws_flush(s) != APR_SUCCESS) {
            s->state = WS_ST_DONE;
        }
        if (s->state == WS_ST_DONE) {
            break;
        }
        /* prefork has no child_stopping hook: a graceful stop interrupts our poll */
        if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) == APR_SUCCESS
            && mpm_state == AP_MPMQ_STOPPING && s->state == WS_ST_OPEN) {
            ws_send_close(s, WS_CLOSE_GOING_AWAY, "server shutting down");
            continue;
        }
        if (!s->input_pending) {
            ws_session_idle(s);
            ws_wait(fd, wake_fd, 0, next);
        }
    }
    ws_flush(s);
}
