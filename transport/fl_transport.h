/*
 * fl_transport: CURVE-encrypted ZeroMQ sockets and the ZAP handler that
 * admits only enrolled node keys.
 *
 * The coordinator binds a ROUTER socket as CURVE server; nodes connect
 * DEALER sockets as CURVE clients with their own key pair.  Each CURVE
 * handshake is checked by fl_zap (ZeroMQ RFC 27) against the enrollment
 * list; an accepted connection's messages carry the node's enrolled name as
 * the "User-Id" property, so every message is bound to its sender by the
 * transport itself, not by anything the sender writes in the message.
 *
 * Why our own ZAP handler and not CZMQ's zauth: zauth admits keys from a
 * directory of certificates and reports the key, not a name, as User-Id; a
 * pluggable lookup needs CZMQ's draft API, which Debian does not build.  The
 * handler below is one REP socket polled in the program's own loop.
 */
#ifndef FL_TRANSPORT_H
#define FL_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "error/fl_error.h"
#include "proto/fl_wire.h"
#include "transport/fl_enroll.h"
#include "identity/fl_identity.h"

#define FL_TRANSPORT_ZAP_DOMAIN "flc"

/* ------------------------------------------------------------------ ZAP */

typedef struct fl_zap fl_zap;

/** Binds the ZAP handler for context `ctx` (must happen before any CURVE
 *  server socket binds). `enroll` is borrowed; it may be replaced later with
 *  fl_zap_set_enroll. */
FL_NODISCARD int fl_zap_new(fl_zap **out, void *ctx, const fl_enroll *enroll);

/** The handler's socket, to include in the caller's zmq_poll set. */
void *fl_zap_socket(fl_zap *z);

/** Answers every pending ZAP request without blocking. Enrolled keys get
 *  200 with their name as User-Id; others get 400 and a log line. */
void fl_zap_handle(fl_zap *z);

/** Replaces the enrollment list (borrowed). Takes effect at the next handshake. */
void fl_zap_set_enroll(fl_zap *z, const fl_enroll *enroll);

/** Number of handshakes refused since creation. */
uint64_t fl_zap_refused(const fl_zap *z);

/** Unbinds and frees. NULL is a no-op. */
void fl_zap_free(fl_zap *z);

/* -------------------------------------------------------------- sockets */

/** Creates a ROUTER socket as CURVE server with identity `id` and binds it to
 *  `endpoint` ("tcp://127.0.0.1:5555", or port "*" for any free port). The
 *  endpoint actually bound is written to `bound` (capacity `bound_len`). */
FL_NODISCARD int fl_transport_server(void **sock, void *ctx, const fl_identity *id,
                                     const char *endpoint, char *bound, size_t bound_len);

/** Creates a DEALER socket as CURVE client with identity `id`, trusting the
 *  server key `server_z85`, and connects it to `endpoint`. If `monitor_ep` is
 *  not NULL, handshake events are published there (see fl_transport_event). */
FL_NODISCARD int fl_transport_client(void **sock, void *ctx, const fl_identity *id,
                                     const char *server_z85, const char *endpoint,
                                     const char *monitor_ep);

/** Encodes and sends an envelope. For a ROUTER socket pass the peer's routing
 *  id; for a DEALER pass rid = NULL. Never blocks: a full queue is FL_EIO. */
FL_NODISCARD int fl_transport_send(void *sock, const uint8_t *rid, size_t rid_len,
                                   const Fl__Envelope *env);

/** One received message: routing id (ROUTER only), the payload frame, the
 *  authenticated User-Id, and whether the peer sent extra frames. */
typedef struct {
    uint8_t rid[256];
    size_t rid_len;
    zmq_msg_t payload;
    char user_id[FL_WIRE_MAX_NAME + 1];
    int malformed; /* wrong number of frames */
} fl_transport_msg;

/** Receives one whole message without blocking (FL_ETIMEOUT if none).
 *  Always call fl_transport_msg_close afterwards when FL_OK is returned. */
FL_NODISCARD int fl_transport_recv(void *sock, int is_router, fl_transport_msg *m);

/** Releases the payload of a received message. */
void fl_transport_msg_close(fl_transport_msg *m);

/** Monitor events a client cares about. */
typedef enum {
    FL_TRANSPORT_EV_NONE = 0,
    FL_TRANSPORT_EV_CONNECTED,   /* CURVE handshake succeeded */
    FL_TRANSPORT_EV_REFUSED,     /* server refused our key (not enrolled) */
    FL_TRANSPORT_EV_DISCONNECTED,
    FL_TRANSPORT_EV_OTHER
} fl_transport_event;

/** Reads one event from a monitor PAIR socket without blocking. */
fl_transport_event fl_transport_event_read(void *monitor);

#endif
