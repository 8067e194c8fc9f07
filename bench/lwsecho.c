/*
 * lwsecho - the libwebsockets peer of the benchmarks: one service thread, echo every
 * whole message back with its type (text as text, binary as binary).
 *
 *   lwsecho PORT
 */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

typedef struct msg {
    struct msg *next;
    size_t len;
    int binary;
    unsigned char buf[];      /* LWS_PRE bytes, then the payload */
} msg;

typedef struct pss {
    msg *head, *tail;         /* messages waiting to be written back */
    unsigned char *rx;        /* the message being reassembled */
    size_t rx_len, rx_cap;
    int rx_binary;
} pss;

static int echo_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                   size_t len)
{
    pss *s = user;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        memset(s, 0, sizeof *s);
        break;
    case LWS_CALLBACK_RECEIVE:
        if (lws_is_first_fragment(wsi)) {
            s->rx_len = 0;
            s->rx_binary = lws_frame_is_binary(wsi);
        }
        if (s->rx_len + len > s->rx_cap) {
            size_t cap = s->rx_cap ? s->rx_cap : 256;
            while (cap < s->rx_len + len)
                cap *= 2;
            unsigned char *p = realloc(s->rx, cap);
            if (!p)
                return -1;
            s->rx = p;
            s->rx_cap = cap;
        }
        memcpy(s->rx + s->rx_len, in, len);
        s->rx_len += len;
        if (lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0) {
            msg *m = malloc(sizeof *m + LWS_PRE + s->rx_len);
            if (!m)
                return -1;
            m->next = NULL;
            m->len = s->rx_len;
            m->binary = s->rx_binary;
            memcpy(m->buf + LWS_PRE, s->rx, s->rx_len);
            if (s->tail)
                s->tail->next = m;
            else
                s->head = m;
            s->tail = m;
            if (s->rx_cap > 65536) {
                free(s->rx);
                s->rx = NULL;
                s->rx_cap = 0;
            }
            lws_callback_on_writable(wsi);
        }
        break;
    case LWS_CALLBACK_SERVER_WRITEABLE: {
        msg *m = s->head;
        if (!m)
            break;
        s->head = m->next;
        if (!s->head)
            s->tail = NULL;
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
                          m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
        free(m);
        if (n < 0)
            return -1;
        if (s->head)
            lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_CLOSED:
        while (s->head) {
            msg *m = s->head;
            s->head = m->next;
            free(m);
        }
        free(s->rx);
        s->rx = NULL;
        break;
    default:
        break;
    }
    return 0;
}

static const struct lws_protocols protocols[] = {
    {"echo", echo_cb, sizeof(pss), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: lwsecho PORT\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = atoi(argv[1]);
    info.iface = "127.0.0.1";
    info.protocols = protocols;
    info.gid = -1;
    info.uid = -1;
    struct lws_context *ctx = lws_create_context(&info);
    if (!ctx) {
        fprintf(stderr, "lwsecho: cannot create the context\n");
        return 1;
    }
    printf("libwebsockets %s echo on 127.0.0.1:%d\n", lws_get_library_version(), info.port);
    fflush(stdout);
    while (lws_service(ctx, 0) >= 0) {
    }
    lws_context_destroy(ctx);
    return 0;
}
