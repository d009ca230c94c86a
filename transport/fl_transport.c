/*
 * fl_transport: CURVE sockets, the ZAP handler and framed send/receive
 * (see fl_transport.h).
 */
#include "transport/fl_transport.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/fl_log.h"

#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"

struct fl_zap {
    void *sock;
    const fl_enroll *enroll;
    uint64_t refused;
};

int fl_zap_new(fl_zap **out, void *ctx, const fl_enroll *enroll)
{
    fl_zap *z = calloc(1, sizeof *z);
    int linger = 0;
    *out = NULL;
    if (!z)
        return fl_error_set(FL_ENOMEM, "out of memory");
    z->enroll = enroll;
    z->sock = zmq_socket(ctx, ZMQ_REP);
    if (!z->sock || zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(z->sock, S_ZAP_ENDPOINT) != 0) {
        int e = errno;
        if (z->sock)
            zmq_close(z->sock);
        free(z);
        return fl_error_set(FL_EIO, "cannot start the ZAP authentication handler: %s",
                            zmq_strerror(e));
    }
    *out = z;
    return FL_OK;
}

void *fl_zap_socket(fl_zap *z)
{
    return z->sock;
}

void fl_zap_set_enroll(fl_zap *z, const fl_enroll *enroll)
{
    z->enroll = enroll;
}

uint64_t fl_zap_refused(const fl_zap *z)
{
    return z->refused;
}

/* ZAP request (RFC 27): version, request id, domain, address, identity,
 * mechanism, credentials...  We read at most 8 frames of bounded size. */
#define S_ZAP_FRAMES 8
static void s_zap_one(fl_zap *z)
{
    zmq_msg_t part[S_ZAP_FRAMES];
    size_t n = 0;
    int more = 1;
    const char *status = "400", *text = "not enrolled", *user = "";
    char address[64] = "?";

    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *m = n < S_ZAP_FRAMES ? &part[n] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, z->sock, 0) < 0) {
            zmq_msg_close(m);
            break;
        }
        more = zmq_msg_more(m);
        if (m == &scratch)
            zmq_msg_close(m);
        else
            n++;
    }
    if (n < 6) {
        /* Not a well-formed request: a REP socket must still answer. */
        status = "500";
        text = "malformed ZAP request";
    } else {
        size_t alen = zmq_msg_size(&part[3]);
        if (alen >= sizeof address)
            alen = sizeof address - 1;
        memcpy(address, zmq_msg_data(&part[3]), alen);
        address[alen] = '\0';
        if (zmq_msg_size(&part[5]) == 5 && memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 &&
            n >= 7 && zmq_msg_size(&part[6]) == 32) {
            const char *name = z->enroll ? fl_enroll_lookup(z->enroll, zmq_msg_data(&part[6]))
                                         : NULL;
            if (name) {
                status = "200";
                text = "OK";
                user = name;
            } else {
                char z85[FL_IDENTITY_Z85_LEN + 1];
                zmq_z85_encode(z85, zmq_msg_data(&part[6]), 32);
                fl_log_warn("refused a connection from %s: its CURVE key %s belongs to no "
                            "enrolled identity", address, z85);
                z->refused++;
            }
        } else {
            text = "only CURVE is accepted";
            z->refused++;
        }
    }
    /* Reply: version, request id, status code, status text, user id, metadata. */
    {
        const char *ver = "1.0";
        zmq_send(z->sock, ver, 3, ZMQ_SNDMORE);
        if (n >= 2)
            zmq_send(z->sock, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
        else
            zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
        zmq_send(z->sock, status, strlen(status), ZMQ_SNDMORE);
        zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(z->sock, user, strlen(user), ZMQ_SNDMORE);
        zmq_send(z->sock, "", 0, 0);
    }
    for (size_t i = 0; i < n; i++)
        zmq_msg_close(&part[i]);
}

void fl_zap_handle(fl_zap *z)
{
    for (int i = 0; i < 64; i++) {
        zmq_pollitem_t it = {z->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 0) <= 0 || !(it.revents & ZMQ_POLLIN))
            return;
        s_zap_one(z);
    }
}

void fl_zap_free(fl_zap *z)
{
    if (!z)
        return;
    zmq_close(z->sock);
    free(z);
}

/* Options common to both ends: bounded message size (checked again by
 * fl_wire before decoding), no lingering on close, ZMTP heartbeats so a dead
 * peer is noticed. */
static int s_common_opts(void *s)
{
    int64_t maxmsg = (int64_t)FL_WIRE_MAX_FRAME + 1024;
    int linger = 0, ivl = 2000, ttl = 10000, tmo = 10000, hwm = 1000;
    if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(s, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl) != 0 ||
        zmq_setsockopt(s, ZMQ_HEARTBEAT_TTL, &ttl, sizeof ttl) != 0 ||
        zmq_setsockopt(s, ZMQ_HEARTBEAT_TIMEOUT, &tmo, sizeof tmo) != 0 ||
        zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0)
        return fl_error_set(FL_EIO, "cannot configure socket: %s", zmq_strerror(errno));
    return FL_OK;
}

int fl_transport_server(void **sock, void *ctx, const fl_identity *id, const char *endpoint,
                        char *bound, size_t bound_len)
{
    void *s;
    int one = 1, rc;
    *sock = NULL;
    if (!zmq_has("curve"))
        return fl_error_set(FL_ECRYPTO, "this libzmq was built without CURVE: install "
                            "Debian's libzmq5 (built with libsodium)");
    s = zmq_socket(ctx, ZMQ_ROUTER);
    if (!s)
        return fl_error_set(FL_EIO, "cannot create socket: %s", zmq_strerror(errno));
    rc = s_common_opts(s);
    if (rc == FL_OK &&
        (zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, fl_identity_curve_secret_z85(id),
                        FL_IDENTITY_Z85_LEN) != 0 ||
         zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, FL_TRANSPORT_ZAP_DOMAIN,
                        strlen(FL_TRANSPORT_ZAP_DOMAIN)) != 0 ||
         zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0))
        rc = fl_error_set(FL_ECRYPTO, "cannot configure CURVE server: %s", zmq_strerror(errno));
    if (rc == FL_OK && zmq_bind(s, endpoint) != 0)
        rc = fl_error_set(FL_EIO, "cannot listen on '%s': %s (is another coordinator running, "
                          "or the address wrong?)", endpoint, zmq_strerror(errno));
    if (rc == FL_OK && bound) {
        size_t len = bound_len;
        if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &len) != 0)
            rc = fl_error_set(FL_EIO, "cannot read bound endpoint: %s", zmq_strerror(errno));
    }
    if (rc != FL_OK) {
        zmq_close(s);
        return rc;
    }
    *sock = s;
    return FL_OK;
}

int fl_transport_client(void **sock, void *ctx, const fl_identity *id, const char *server_z85,
                        const char *endpoint, const char *monitor_ep)
{
    void *s;
    int rc, ivl = 100, ivl_max = 5000;
    *sock = NULL;
    if (!zmq_has("curve"))
        return fl_error_set(FL_ECRYPTO, "this libzmq was built without CURVE");
    s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s)
        return fl_error_set(FL_EIO, "cannot create socket: %s", zmq_strerror(errno));
    rc = s_common_opts(s);
    /* Reconnect with exponential backoff up to 5 s when the coordinator is away. */
    if (rc == FL_OK &&
        (zmq_setsockopt(s, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl) != 0 ||
         zmq_setsockopt(s, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server_z85, FL_IDENTITY_Z85_LEN) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, fl_identity_public_of(id)->curve_z85,
                        FL_IDENTITY_Z85_LEN) != 0 ||
         zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, fl_identity_curve_secret_z85(id),
                        FL_IDENTITY_Z85_LEN) != 0))
        rc = fl_error_set(FL_ECRYPTO, "cannot configure CURVE client: %s", zmq_strerror(errno));
    if (rc == FL_OK && monitor_ep &&
        zmq_socket_monitor(s, monitor_ep,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_DISCONNECTED) != 0)
        rc = fl_error_set(FL_EIO, "cannot monitor socket: %s", zmq_strerror(errno));
    if (rc == FL_OK && zmq_connect(s, endpoint) != 0)
        rc = fl_error_set(FL_EIO, "cannot connect to '%s': %s", endpoint, zmq_strerror(errno));
    if (rc != FL_OK) {
        zmq_close(s);
        return rc;
    }
    *sock = s;
    return FL_OK;
}

int fl_transport_send(void *sock, const uint8_t *rid, size_t rid_len, const Fl__Envelope *env)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = fl_wire_encode(env, &buf, &len);
    if (rc != FL_OK)
        return rc;
    if (rid && zmq_send(sock, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        rc = fl_error_set(FL_EIO, "cannot send to peer: %s (it has probably disconnected)",
                          zmq_strerror(errno));
        goto done;
    }
    if (zmq_send(sock, buf, len, ZMQ_DONTWAIT) < 0)
        rc = fl_error_set(FL_EIO, "cannot send a %zu-byte message: %s", len, zmq_strerror(errno));
done:
    free(buf);
    return rc;
}

int fl_transport_recv(void *sock, int is_router, fl_transport_msg *m)
{
    zmq_msg_t part;
    int more;

    memset(m->rid, 0, sizeof m->rid);
    m->rid_len = 0;
    m->user_id[0] = '\0';
    m->malformed = 0;
    zmq_msg_init(&m->payload);
    if (is_router) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            zmq_msg_close(&m->payload);
            return FL_ETIMEOUT;
        }
        m->rid_len = zmq_msg_size(&part) <= sizeof m->rid ? zmq_msg_size(&part) : sizeof m->rid;
        memcpy(m->rid, zmq_msg_data(&part), m->rid_len);
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
        if (!more) {
            m->malformed = 1;
            return FL_OK;
        }
        if (zmq_msg_recv(&m->payload, sock, 0) < 0) {
            zmq_msg_close(&m->payload);
            return FL_ETIMEOUT;
        }
    } else if (zmq_msg_recv(&m->payload, sock, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m->payload);
        return FL_ETIMEOUT;
    }
    {
        const char *uid = zmq_msg_gets(&m->payload, "User-Id");
        if (uid)
            snprintf(m->user_id, sizeof m->user_id, "%s", uid);
    }
    /* One frame per message: drain and flag anything more. */
    more = zmq_msg_more(&m->payload);
    while (more) {
        m->malformed = 1;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, 0) < 0) {
            zmq_msg_close(&part);
            break;
        }
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
    }
    return FL_OK;
}

void fl_transport_msg_close(fl_transport_msg *m)
{
    zmq_msg_close(&m->payload);
}

fl_transport_event fl_transport_event_read(void *monitor)
{
    zmq_msg_t msg;
    fl_transport_event ev = FL_TRANSPORT_EV_NONE;
    uint16_t id = 0;

    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, monitor, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return FL_TRANSPORT_EV_NONE;
    }
    if (zmq_msg_size(&msg) >= 2)
        memcpy(&id, zmq_msg_data(&msg), 2);
    /* The event frame is followed by the endpoint address frame. */
    while (zmq_msg_more(&msg)) {
        zmq_msg_close(&msg);
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, monitor, 0) < 0)
            break;
    }
    zmq_msg_close(&msg);
    switch (id) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: ev = FL_TRANSPORT_EV_CONNECTED; break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: ev = FL_TRANSPORT_EV_REFUSED; break;
    case ZMQ_EVENT_DISCONNECTED: ev = FL_TRANSPORT_EV_DISCONNECTED; break;
    default: ev = FL_TRANSPORT_EV_OTHER; break;
    }
    return ev;
}
