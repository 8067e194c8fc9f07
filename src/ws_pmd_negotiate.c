/*
 * ws_pmd_negotiate.c - permessage-deflate (RFC 7692 5, 7.1): parsing a client's
 * Sec-WebSocket-Extensions offers and choosing the parameters of the first acceptable
 * one under the server's policy.  Protocol core: no httpd include.  See ws_deflate.h.
 */
#include "ws_deflate.h"

#include <stdlib.h>
#include <string.h>

/* ---- policy and negotiation ----------------------------------------------------- */

void ws_pmd_policy_default(ws_pmd_policy *policy)
{
    policy->max_window_bits = 15;
    policy->client_max_window_bits = 15;
    policy->mem_level = 8;
    policy->level = 6;
    policy->server_no_context_takeover = 0;
    policy->client_no_context_takeover = 0;
}

static int ws_clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* RFC 7230 3.2.6: tchar */
static int ws_tchar(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static const char *ws_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Case-insensitive comparison of s[0..n) with the lower-case literal lit. */
static int ws_name_is(const char *s, size_t n, const char *lit)
{
    size_t i;

    if (strlen(lit) != n)
        return 0;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (c != lit[i])
            return 0;
    }
    return 1;
}

/* After a syntax error: skip to the next ',' outside a quoted-string, or the end. */
static const char *ws_skip_element(const char *s)
{
    int quoted = 0;

    for (; *s; s++) {
        if (quoted) {
            if (*s == '\\' && s[1])
                s++;
            else if (*s == '"')
                quoted = 0;
        } else if (*s == '"') {
            quoted = 1;
        } else if (*s == ',') {
            break;
        }
    }
    return s;
}

/* One parameter's value.  Values we care about are 1 or 2 digits, so a longer one
 * is kept only as "too long" (still invalid, but the element parses on). */
typedef struct {
    int present;        /* "=" was there */
    char v[8];
    size_t n;
    int too_long;
} ws_value;

/* Parse token / quoted-string at *ps into val.  Returns 0 on a syntax error.
 * RFC 6455 9.1: after unescaping, a quoted-string value must be a token. */
static int ws_parse_value(const char **ps, ws_value *val)
{
    const char *s = *ps;
    int quoted = (*s == '"');
    size_t i;

    val->present = 1;
    val->n = 0;
    val->too_long = 0;
    if (quoted) {
        s++;
        for (;;) {
            int c = (unsigned char)*s;
            if (c == '\0')
                return 0;                       /* unterminated */
            if (c == '"') {
                s++;
                break;
            }
            if (c == '\\') {                    /* RFC 7230 3.2.6: quoted-pair */
                s++;
                c = (unsigned char)*s;
                if (c == '\0')
                    return 0;
            }
            if (val->n < sizeof(val->v))
                val->v[val->n++] = (char)c;
            else
                val->too_long = 1;
            s++;
        }
        if (val->n == 0)
            return 0;
        for (i = 0; i < val->n; i++)
            if (!ws_tchar((unsigned char)val->v[i]))
                return 0;
    } else {
        while (ws_tchar((unsigned char)*s)) {
            if (val->n < sizeof(val->v))
                val->v[val->n++] = *s;
            else
                val->too_long = 1;
            s++;
        }
        if (val->n == 0)
            return 0;
    }
    *ps = s;
    return 1;
}

/* RFC 7692 7.1.2.1/7.1.2.2: 1*DIGIT, a decimal integer without leading zeroes
 * between 8 and 15 inclusive.  Returns the value or -1. */
static int ws_window_bits(const ws_value *val)
{
    int bits = 0;
    size_t i;

    if (val->too_long || val->n == 0 || val->n > 2 || val->v[0] == '0')
        return -1;
    for (i = 0; i < val->n; i++) {
        if (val->v[i] < '0' || val->v[i] > '9')
            return -1;
        bits = bits * 10 + (val->v[i] - '0');
    }
    return bits >= 8 && bits <= 15 ? bits : -1;
}

/* What one permessage-deflate offer asked for.  -1: parameter absent. */
typedef struct {
    int server_nct, client_nct;     /* 0/1 */
    int server_bits;                /* -1 or 8..15 */
    int client_bits;                /* -1 absent, 0 present without value, or 8..15 */
} ws_offer;

/*
 * Parse the parameters of one element starting after its name.  *ps ends at the ','
 * or NUL that ends the element.  Returns 1 if the element is a well-formed,
 * acceptable permessage-deflate offer (when is_pmd), 0 otherwise.
 */
static int ws_parse_params(const char **ps, int is_pmd, ws_offer *o)
{
    const char *s = *ps;
    int ok = is_pmd;

    o->server_nct = o->client_nct = 0;
    o->server_bits = o->client_bits = -1;
    for (;;) {
        const char *name;
        size_t nlen;
        ws_value val;

        s = ws_ows(s);
        if (*s == ',' || *s == '\0')
            break;
        if (*s != ';')
            goto syntax;
        s = ws_ows(s + 1);
        name = s;
        while (ws_tchar((unsigned char)*s))
            s++;
        nlen = (size_t)(s - name);
        if (nlen == 0)
            goto syntax;
        s = ws_ows(s);
        val.present = 0;
        val.n = 0;
        val.too_long = 0;
        if (*s == '=') {
            s = ws_ows(s + 1);
            if (!ws_parse_value(&s, &val))
                goto syntax;
        }
        if (!is_pmd || !ok)
            continue;               /* keep parsing only to find the element's end */

        /* RFC 7692 7: decline an offer with a parameter not defined for offers, an
         * invalid value, or two parameters of the same name. */
        if (ws_name_is(name, nlen, "server_no_context_takeover")) {
            /* RFC 7692 7.1.1.1: this parameter has no value */
            if (o->server_nct || val.present)
                ok = 0;
            o->server_nct = 1;
        } else if (ws_name_is(name, nlen, "client_no_context_takeover")) {
            /* RFC 7692 7.1.1.2: this parameter has no value */
            if (o->client_nct || val.present)
                ok = 0;
            o->client_nct = 1;
        } else if (ws_name_is(name, nlen, "server_max_window_bits")) {
            /* RFC 7692 7.1.2.1: a value is required */
            int b = val.present ? ws_window_bits(&val) : -1;
            if (o->server_bits != -1 || b < 0)
                ok = 0;
            o->server_bits = b < 0 ? 0 : b;
        } else if (ws_name_is(name, nlen, "client_max_window_bits")) {
            /* RFC 7692 7.1.2.2: the value is optional */
            int b = val.present ? ws_window_bits(&val) : 0;
            if (o->client_bits != -1 || b < 0)
                ok = 0;
            o->client_bits = b < 0 ? 0 : b;
        } else {
            ok = 0;
        }
    }
    *ps = s;
    return ok;

syntax:
    *ps = ws_skip_element(s);
    return 0;
}

/* Append text to the response; returns 0 if it does not fit. */
static int ws_put(char *out, size_t size, size_t *pos, const char *text)
{
    size_t n = strlen(text);

    if (*pos + n + 1 > size)
        return 0;
    memcpy(out + *pos, text, n + 1);
    *pos += n;
    return 1;
}

static int ws_put_bits(char *out, size_t size, size_t *pos, const char *name, int bits)
{
    char num[4];

    num[0] = '=';
    if (bits >= 10) {
        num[1] = '1';
        num[2] = (char)('0' + bits - 10);
        num[3] = '\0';
    } else {
        num[1] = (char)('0' + bits);
        num[2] = '\0';
    }
    return ws_put(out, size, pos, "; ") && ws_put(out, size, pos, name)
        && ws_put(out, size, pos, num);
}

/* Turn an acceptable offer into agreed parameters and the response value. */
static int ws_accept(const ws_offer *o, const ws_pmd_policy *policy,
                     ws_pmd_params *agreed, char *out, size_t size)
{
    int smax = ws_clamp(policy->max_window_bits, 8, 15);
    int cmax = ws_clamp(policy->client_max_window_bits, 8, 15);
    int server_bits_answer = 0;     /* 0: leave out of the response */
    int client_bits_answer = 0;
    size_t pos = 0;
    ws_pmd_params a;

    /* RFC 7692 7.1.1.1: accepting an offer with server_no_context_takeover means
     * answering with it; the server may also add it on its own. */
    a.server_no_context_takeover = o->server_nct || policy->server_no_context_takeover;

    /* RFC 7692 7.1.2.1: server_max_window_bits=N in the offer is accepted by
     * answering the same or a smaller value; the server may also send it unasked. */
    a.server_max_window_bits = smax;
    if (o->server_bits > 0 && o->server_bits < smax)
        a.server_max_window_bits = o->server_bits;
    if (o->server_bits > 0 || a.server_max_window_bits < 15)
        server_bits_answer = a.server_max_window_bits;

    /* RFC 7692 7.1.2.2: client_max_window_bits may be answered only if offered, with
     * a value no larger than the offered one.  Without it the client may use 15. */
    if (o->client_bits >= 0) {
        a.client_max_window_bits = cmax;
        if (o->client_bits > 0 && o->client_bits < cmax)
            a.client_max_window_bits = o->client_bits;
        client_bits_answer = a.client_max_window_bits;
    } else {
        a.client_max_window_bits = 15;
    }

    /* RFC 7692 7.1.1.2: the server may answer client_no_context_takeover whether or
     * not it was offered.  We do when the client offered it (its hint costs us
     * nothing to confirm and frees our inflate state between messages), when the
     * policy says so, and when the client's window is larger than we keep. */
    a.client_no_context_takeover = o->client_nct || policy->client_no_context_takeover
        || a.client_max_window_bits > cmax;

    if (!ws_put(out, size, &pos, "permessage-deflate"))
        return 0;
    if (a.server_no_context_takeover
        && !ws_put(out, size, &pos, "; server_no_context_takeover"))
        return 0;
    if (a.client_no_context_takeover
        && !ws_put(out, size, &pos, "; client_no_context_takeover"))
        return 0;
    if (server_bits_answer
        && !ws_put_bits(out, size, &pos, "server_max_window_bits", server_bits_answer))
        return 0;
    if (client_bits_answer
        && !ws_put_bits(out, size, &pos, "client_max_window_bits", client_bits_answer))
        return 0;
    *agreed = a;
    return 1;
}

int ws_pmd_negotiate(const char *header, const ws_pmd_policy *policy,
                     ws_pmd_params *agreed, char *response, size_t response_size)
{
    const char *s = header;
    ws_pmd_policy def;

    if (response_size)
        response[0] = '\0';
    if (!policy) {
        ws_pmd_policy_default(&def);
        policy = &def;
    }
    if (!s)
        return 0;
    /* RFC 6455 9.1: extension-list = 1#extension; RFC 7230 7: empty list elements
     * are skipped.  RFC 7692 5: the offers are in the client's order of preference,
     * so the first acceptable one wins. */
    while (*s) {
        const char *name;
        size_t nlen;
        ws_offer o;
        int ok;

        s = ws_ows(s);
        if (*s == ',') {
            s++;
            continue;
        }
        if (*s == '\0')
            break;
        name = s;
        while (ws_tchar((unsigned char)*s))
            s++;
        nlen = (size_t)(s - name);
        if (nlen == 0) {
            s = ws_skip_element(s);
            continue;
        }
        ok = ws_parse_params(&s, ws_name_is(name, nlen, "permessage-deflate"), &o);
        if (ok && ws_accept(&o, policy, agreed, response, response_size))
            return 1;
        if (response_size)
            response[0] = '\0';
        /* s is at the ',' ending this element, or the end */
    }
    return 0;
}

