/*
 * fuzz_secagg_client: a node's secure-aggregation client
 * (secagg/fl_secagg.h, fl_secagg_client_share / _masked / _consist /
 * _unmask), fed a hostile coordinator's message: the server's broadcast
 * to party V at step S is replaced by the input (after its first byte).
 * V then carries on with what it computed (if anything), as do the other,
 * honest parties, and the server validates V's answers.
 *
 * First input byte:
 *   bits 0-1  step S: 1 + value (adverts, share box, U3 list, U4 signatures)
 *   bits 3-4  round configuration (fuzz_secagg_round.c)
 *   bits 5-6  party V (mod n)
 *   bit 7     re-sign what the parties named in the message would sign
 *             (as if the coordinator replayed or reordered genuine
 *             signatures): each 165-byte advert of an ADVERTS list, each
 *             68-byte entry of a SIGS list over the round's U3
 *
 * Properties checked beyond "no crash": every rejection has a message; a
 * round that completes gives its sum and counters.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_secagg_round.h"
#include "fuzz/fuzz_support.h"
#include "secagg/fl_secagg_internal.h"

static void s_down(fuzz_secagg_round *r, int step, uint32_t party, uint8_t **msg, size_t *len)
{
    uint8_t *m;
    if (party != r->fuzz_party || step != r->fuzz_step)
        return;
    free(*msg);
    m = malloc(r->fuzz_len ? r->fuzz_len : 1);
    if (!m)
        abort();
    if (r->fuzz_len)
        memcpy(m, r->fuzz, r->fuzz_len);
    if (r->resign && step == 1 && r->fuzz_len >= 5)
        for (size_t o = 5; o + FL_SECAGG_ADVERT_LEN <= r->fuzz_len; o += FL_SECAGG_ADVERT_LEN)
            fuzz_secagg_resign_advert(r, m + o);
    if (r->resign && step == 4 && r->fuzz_len >= 5)
        for (size_t o = 5; o + FL_SECAGG_SIG_ENTRY <= r->fuzz_len; o += FL_SECAGG_SIG_ENTRY)
            fuzz_secagg_resign_consist(r, m + o);
    *msg = m;
    *len = r->fuzz_len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_secagg_round r;

    fuzz_init();
    if (size < 1 || size > (1u << 20))
        return 0;
    fuzz_secagg_round_init(&r, (data[0] >> 3) & 3u);
    r.fuzz_step = 1 + (data[0] & 3);
    r.fuzz_party = ((data[0] >> 5) & 3u) % r.p.n;
    r.resign = (data[0] & 0x80) != 0;
    r.fuzz = data + 1;
    r.fuzz_len = size - 1;
    r.down = s_down;
    (void)fuzz_secagg_round_run(&r);
    fuzz_secagg_round_free(&r);
    return 0;
}
