/* End-to-end tests of fl_transport on 127.0.0.1: CURVE sockets, the ZAP
 * handler admitting only enrolled keys, the authenticated User-Id, refusal
 * and revocation, and framing.  Every wait is a bounded loop (at most
 * S_TRIES x S_TICK_MS). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "identity/fl_identity.h"

#include "proto/fl_wire.h"
#include "transport/fl_enroll.h"
#include "transport/fl_transport.h"

#define S_TRIES 100
#define S_TICK_MS 50
#define S_CONS "wdbc-consortium"

typedef struct {
    void *ctx;
    fl_enroll *enroll;
    fl_zap *zap;
    fl_identity *server_id, *a_id;
    void *server;
    char bound[256];
    void *socks[16]; /* client sockets, closed by the teardown even on failure */
    int nsocks;
} s_world;

static s_world W;

static void s_setup(void)
{
    memset(&W, 0, sizeof W);
    W.ctx = zmq_ctx_new();
    cr_assert_not_null(W.ctx);
    cr_assert_eq(fl_identity_generate(&W.server_id), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_identity_generate(&W.a_id), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_enroll_new(&W.enroll), FL_OK);
    cr_assert_eq(fl_enroll_add(W.enroll, "hospital-a",
                               fl_identity_public_of(W.a_id)->sign_z85), FL_OK,
                 "%s", fl_error_last());
    cr_assert_eq(fl_zap_new(&W.zap, W.ctx, W.enroll), FL_OK, "%s", fl_error_last());
    cr_assert_eq(fl_transport_server(&W.server, W.ctx, W.server_id, "tcp://127.0.0.1:*", W.bound,
                                     sizeof W.bound),
                 FL_OK, "%s", fl_error_last());
    cr_assert(strncmp(W.bound, "tcp://127.0.0.1:", 16) == 0, "bound '%s'", W.bound);
    cr_assert_neq(strcmp(W.bound + 16, "*"), 0, "the real port is reported");
}

static void s_teardown(void)
{
    for (int i = 0; i < W.nsocks; i++)
        zmq_close(W.socks[i]);
    zmq_close(W.server);
    fl_zap_free(W.zap);
    zmq_ctx_term(W.ctx);
    fl_enroll_free(W.enroll);
    fl_identity_free(W.server_id);
    fl_identity_free(W.a_id);
}

TestSuite(transport, .init = s_setup, .fini = s_teardown, .timeout = 60);

/* A client of identity id with a monitor PAIR connected to it; it trusts
 * the server's CURVE key (the public-key line of its .pub file). */
/* Sockets are registered in W and closed by the teardown. */
static void s_client(void **sock, void **mon, const fl_identity *id, const char *mon_ep)
{
    cr_assert_eq(fl_transport_client(sock, W.ctx, id, fl_identity_public_of(W.server_id)->curve_z85,
                                     W.bound, mon_ep),
                 FL_OK, "%s", fl_error_last());
    *mon = zmq_socket(W.ctx, ZMQ_PAIR);
    cr_assert_not_null(*mon);
    int linger = 0;
    zmq_setsockopt(*mon, ZMQ_LINGER, &linger, sizeof linger);
    cr_assert_eq(zmq_connect(*mon, mon_ep), 0);
    cr_assert_lt(W.nsocks + 2, 16);
    W.socks[W.nsocks++] = *sock;
    W.socks[W.nsocks++] = *mon;
}

static void s_join(Fl__Envelope *env, Fl__Join *j, uint8_t digest[32], const char *name)
{
    fl_wire_envelope_init(env, S_CONS);
    fl__join__init(j);
    memset(digest, 0x42, 32);
    j->node_name = (char *)name;
    j->schema_digest.data = digest;
    j->schema_digest.len = 32;
    j->num_features = 30;
    env->body_case = FL__ENVELOPE__BODY_JOIN;
    env->join = j;
}

/* One tick: answer ZAP, then wait up to S_TICK_MS for the server or the
 * given monitor (may be NULL). */
static void s_tick(void *mon)
{
    zmq_pollitem_t it[3] = {
        {fl_zap_socket(W.zap), 0, ZMQ_POLLIN, 0},
        {W.server, 0, ZMQ_POLLIN, 0},
        {mon, 0, ZMQ_POLLIN, 0},
    };
    fl_zap_handle(W.zap);
    zmq_poll(it, mon ? 3 : 2, S_TICK_MS);
    fl_zap_handle(W.zap);
}

/* Waits (bounded) for one message on the server. FL_OK or FL_ETIMEOUT. */
static int s_server_recv(fl_transport_msg *m, int tries)
{
    for (int i = 0; i < tries; i++) {
        if (fl_transport_recv(W.server, 1, m) == FL_OK)
            return FL_OK;
        s_tick(NULL);
    }
    return FL_ETIMEOUT;
}

/* Waits (bounded) for a monitor event of kind `want`. */
static int s_wait_event(void *mon, fl_transport_event want)
{
    for (int i = 0; i < S_TRIES; i++) {
        fl_transport_event ev;
        while ((ev = fl_transport_event_read(mon)) != FL_TRANSPORT_EV_NONE)
            if (ev == want)
                return 1;
        s_tick(mon);
    }
    return 0;
}

Test(transport, recv_without_a_message_times_out_immediately)
{
    fl_transport_msg m;
    cr_assert_eq(fl_transport_recv(W.server, 1, &m), FL_ETIMEOUT);
}

Test(transport, enrolled_client_is_admitted_and_tagged_with_its_enrolled_name)
{
    void *a, *mon;
    Fl__Envelope env, *got = NULL;
    Fl__Join j;
    uint8_t digest[32];
    fl_transport_msg m;

    s_client(&a, &mon, W.a_id, "inproc://mon-a");
    /* The name written in the message is NOT what identifies the sender. */
    s_join(&env, &j, digest, "claims-to-be-b");
    cr_assert_eq(fl_transport_send(a, NULL, 0, &env), FL_OK, "%s", fl_error_last());
    cr_assert_eq(s_server_recv(&m, S_TRIES), FL_OK, "no message from the enrolled client");
    cr_assert_str_eq(m.user_id, "hospital-a");
    /* The authenticated name leads to the sender's Ed25519 identity key. */
    cr_assert_not_null(fl_enroll_identity(W.enroll, m.user_id));
    cr_assert_arr_eq(fl_enroll_identity(W.enroll, m.user_id),
                     fl_identity_public_of(W.a_id)->sign_pk, 32);
    cr_assert_eq(m.malformed, 0);
    cr_assert_gt(m.rid_len, 0u);
    cr_assert_eq(fl_wire_decode(&got, zmq_msg_data(&m.payload), zmq_msg_size(&m.payload),
                                S_CONS),
                 FL_OK, "%s", fl_error_last());
    cr_assert_str_eq(got->join->node_name, "claims-to-be-b");
    fl_wire_free(got);

    /* The server can answer through the routing id. */
    {
        Fl__Envelope err;
        Fl__Error e;
        fl_transport_msg back;
        int rc = FL_ETIMEOUT;
        fl_wire_envelope_init(&err, S_CONS);
        fl__error__init(&e);
        e.code = FL_EAUTH;
        e.message = "name mismatch";
        err.body_case = FL__ENVELOPE__BODY_ERROR;
        err.error = &e;
        cr_assert_eq(fl_transport_send(W.server, m.rid, m.rid_len, &err), FL_OK, "%s",
                     fl_error_last());
        for (int i = 0; i < S_TRIES && rc != FL_OK; i++) {
            zmq_pollitem_t it = {a, 0, ZMQ_POLLIN, 0};
            rc = fl_transport_recv(a, 0, &back);
            if (rc != FL_OK)
                zmq_poll(&it, 1, S_TICK_MS);
        }
        cr_assert_eq(rc, FL_OK, "the client got no reply");
        cr_assert_eq(back.rid_len, 0u);
        cr_assert_eq(fl_wire_decode(&got, zmq_msg_data(&back.payload),
                                    zmq_msg_size(&back.payload), S_CONS),
                     FL_OK, "%s", fl_error_last());
        cr_assert_str_eq(got->error->message, "name mismatch");
        fl_wire_free(got);
        fl_transport_msg_close(&back);
    }
    fl_transport_msg_close(&m);
    cr_assert_eq(fl_zap_refused(W.zap), 0u);
}

Test(transport, client_with_an_unenrolled_key_is_refused_and_never_heard)
{
    void *b, *mon;
    fl_identity *b_id = NULL;
    Fl__Envelope env;
    Fl__Join j;
    uint8_t digest[32];
    fl_transport_msg m;

    cr_assert_eq(fl_identity_generate(&b_id), FL_OK);
    s_client(&b, &mon, b_id, "inproc://mon-b");
    s_join(&env, &j, digest, "hospital-a"); /* even claiming an enrolled name */
    cr_assert_eq(fl_transport_send(b, NULL, 0, &env), FL_OK, "%s", fl_error_last());
    cr_assert(s_wait_event(mon, FL_TRANSPORT_EV_REFUSED), "B's monitor never reported refusal");
    cr_assert_geq(fl_zap_refused(W.zap), 1u);
    /* Give a wrongly admitted message time to arrive: none may. */
    cr_assert_eq(s_server_recv(&m, 10), FL_ETIMEOUT, "the server heard from an unenrolled key");
    fl_identity_free(b_id);
}

Test(transport, revoked_key_is_refused_on_its_next_connection)
{
    void *a, *mon, *a2, *mon2;
    Fl__Envelope env;
    Fl__Join j;
    uint8_t digest[32];
    fl_transport_msg m;

    /* Admitted while enrolled. */
    s_client(&a, &mon, W.a_id, "inproc://mon-a");
    cr_assert(s_wait_event(mon, FL_TRANSPORT_EV_CONNECTED), "A was not admitted");
    cr_assert_eq(fl_zap_refused(W.zap), 0u);

    /* Revoke, then a new connection with the same key is refused. */
    cr_assert_eq(fl_enroll_remove(W.enroll, "hospital-a"), FL_OK);
    fl_zap_set_enroll(W.zap, W.enroll);
    s_client(&a2, &mon2, W.a_id, "inproc://mon-a2");
    s_join(&env, &j, digest, "hospital-a");
    cr_assert_eq(fl_transport_send(a2, NULL, 0, &env), FL_OK, "%s", fl_error_last());
    cr_assert(s_wait_event(mon2, FL_TRANSPORT_EV_REFUSED), "the revoked key was not refused");
    cr_assert_geq(fl_zap_refused(W.zap), 1u);
    cr_assert_eq(s_server_recv(&m, 10), FL_ETIMEOUT, "the server heard from a revoked key");
}

Test(transport, zap_with_no_enrollment_list_refuses_everyone)
{
    void *a, *mon;
    fl_zap_set_enroll(W.zap, NULL);
    s_client(&a, &mon, W.a_id, "inproc://mon-a");
    cr_assert(s_wait_event(mon, FL_TRANSPORT_EV_REFUSED), "no list must mean no admission");
    cr_assert_geq(fl_zap_refused(W.zap), 1u);
}

Test(transport, multi_frame_messages_are_flagged_malformed_and_drained)
{
    void *a, *mon;
    fl_transport_msg m;
    Fl__Envelope env;
    Fl__Join j;
    uint8_t digest[32];

    s_client(&a, &mon, W.a_id, "inproc://mon-a");
    cr_assert_eq(zmq_send(a, "one", 3, ZMQ_SNDMORE), 3);
    cr_assert_eq(zmq_send(a, "two", 3, ZMQ_SNDMORE), 3);
    cr_assert_eq(zmq_send(a, "three", 5, 0), 5);
    cr_assert_eq(s_server_recv(&m, S_TRIES), FL_OK, "nothing arrived");
    cr_assert_eq(m.malformed, 1);
    cr_assert_eq(zmq_msg_size(&m.payload), 3u);
    cr_assert_arr_eq(zmq_msg_data(&m.payload), "one", 3);
    cr_assert_str_eq(m.user_id, "hospital-a");
    fl_transport_msg_close(&m);

    /* The extra frames were drained: the next message stands alone. */
    s_join(&env, &j, digest, "hospital-a");
    cr_assert_eq(fl_transport_send(a, NULL, 0, &env), FL_OK);
    cr_assert_eq(s_server_recv(&m, S_TRIES), FL_OK, "the second message did not arrive");
    cr_assert_eq(m.malformed, 0);
    {
        Fl__Envelope *got = NULL;
        cr_assert_eq(fl_wire_decode(&got, zmq_msg_data(&m.payload), zmq_msg_size(&m.payload),
                                    S_CONS),
                     FL_OK, "%s", fl_error_last());
        fl_wire_free(got);
    }
    fl_transport_msg_close(&m);
}

Test(transport, server_refuses_a_second_bind_of_the_same_endpoint)
{
    void *s2 = (void *)0x1;
    cr_assert_eq(fl_transport_server(&s2, W.ctx, W.server_id, W.bound, NULL, 0), FL_EIO);
    cr_assert_null(s2);
    cr_assert_not_null(strstr(fl_error_last(), W.bound), "%s", fl_error_last());
}

Test(transport, a_second_zap_handler_in_the_same_context_is_refused)
{
    fl_zap *z2 = (fl_zap *)0x1;
    cr_assert_eq(fl_zap_new(&z2, W.ctx, W.enroll), FL_EIO);
    cr_assert_null(z2);
}

Test(transport, free_of_null_zap_is_a_no_op)
{
    fl_zap_free(NULL);
}
